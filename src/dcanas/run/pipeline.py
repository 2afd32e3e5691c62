"""The stage graph and the run directory of ``dcanas run``; nothing else.

A run directory holds a folder per stage and ``run.json``: the configuration, the versions of
dcanas and its main dependencies, and per stage its status, wall time and the hash of its inputs.
With ``resume`` a stage whose inputs hash is unchanged and that finished is skipped; ``from_stage``
forces that stage and every later one. A failed stage stops the run with one line naming the stage
and its log file; the finished stages stay reusable.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..errors import UserError
from ..files import clean_stale_tmp, write_json

T = TypeVar("T")

class StageFailed(Exception):
    def __init__(self, stage: str, log: Path, cause: BaseException) -> None:
        super().__init__(f"stage {stage!r} failed: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''} (log: {log})")
        self.stage, self.log, self.cause = stage, log, cause


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("dcanas", "torch", "torchvision", "numpy", "onnx", "onnxscript", "onnxruntime", "litert-torch",
                "ai-edge-litert", "ai-edge-quantizer", "fvcore", "paramiko"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    out["python"] = sys.version.split()[0]
    return out


def hash_inputs(*parts: Any) -> str:
    """sha256 of JSON-able parts; a Path part contributes its file content (or a folder's files)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else [part]
            for f in files:
                h.update(f.name.encode())
                h.update(f.read_bytes() if f.exists() else b"<missing>")
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _prepare_stage_dir(run: "RunDir", name: str, st: dict[str, Any], inputs: str, from_stage: str | None,
                       progress: Callable[[str], None]) -> None:
    """A stage that runs again with the inputs it was interrupted with continues from its checkpoints
    (and says so); with other inputs, or redone on purpose (``--from``, or after it had finished),
    its folder is cleared first, so no checkpoint written under other options is ever reused."""
    d = run.root / name
    if not d.is_dir() or not any(d.iterdir()):
        return
    if from_stage is None and st.get("inputs") == inputs and st.get("status") in ("running", "failed"):
        progress(f"   resuming {name} from the checkpoints in {d} (same inputs as the interrupted attempt; "
                 f"--from {name} starts it afresh)")
        return
    why = f"--from {from_stage}" if from_stage else "its inputs changed"
    shutil.rmtree(d)
    progress(f"   cleared {d} ({why}); {name} starts afresh")


def _note_dataset_change(run: "RunDir", progress: Callable[[str], None]) -> None:
    """Say why stages rerun when a ``folder:`` tree changed since the last attempt (their hashes include its files)."""
    from ..data.datasets import dataset_identity

    name = run.config.get("dataset")
    if not name:
        return
    now, before = dataset_identity(name), run.state.get("dataset")
    if isinstance(now, dict) and isinstance(before, dict) and now != before and run.state.get("stages"):
        what = ", ".join(f"{k} {before.get(k)} -> {now[k]}" for k in ("classes", "files") if before.get(k) != now[k])
        progress(f"the dataset changed since the last attempt ({what or 'files replaced or modified'}): the stages that "
                 f"read it run again")
    run.state["dataset"] = now


@dataclass
class StageSpec:
    name: str
    inputs: Callable[["RunDir"], str]   # hash of everything the stage depends on
    run: Callable[["RunDir", Callable[[str], None]], Any]  # returns the stage's outputs record (a dataclass)


class RunDir:
    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = Path(root)
        self.config = config
        self.state_path = self.root / "run.json"
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}

    def stage_dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def save(self) -> None:
        self.state.update(config=self.config, versions=self.state.get("versions") or versions())
        write_json(self.state_path, self.state)

    def path(self, relative: str) -> Path:
        """A path a stage's outputs record names (relative to the run directory)."""
        return self.root / relative

    def outputs(self, name: str, cls: type[T]) -> T:
        """The typed outputs record of finished stage ``name``."""
        st = self.state.get("stages", {}).get(name, {})
        if st.get("status") != "done":
            raise UserError(f"stage {name!r} has not finished in {self.root}; run it first (--from {name})")
        try:
            return cls(**st["summary"])
        except TypeError:
            raise UserError(f"{self.state_path}: stage {name!r} was written by another dcanas version; redo it with --from {name}") from None

    def stage_state(self, name: str) -> dict[str, Any]:
        return self.state.setdefault("stages", {}).setdefault(name, {"status": "pending"})


def run_pipeline(run: RunDir, stages: list[StageSpec], *, resume: bool, from_stage: str | None,
                 progress: Callable[[str], None]) -> dict[str, Any]:
    names = [s.name for s in stages]
    if from_stage is not None and from_stage not in names:
        raise UserError(f"unknown stage {from_stage!r} for --from; valid: {', '.join(names)}")
    if run.state.get("stages") and not resume and from_stage is None:
        raise UserError(f"{run.root} already holds a run; pass --resume to continue it, --from STAGE to redo from a stage, "
                        f"or choose another --out")
    forced = False
    for stale in clean_stale_tmp(run.root):
        progress(f"removed {stale.relative_to(run.root)}, left by an interrupted write")
    run.state["versions"] = versions()
    _note_dataset_change(run, progress)
    for spec in stages:
        forced = forced or spec.name == from_stage
        st = run.stage_state(spec.name)
        inputs = spec.inputs(run)
        if not forced and st.get("status") == "done" and st.get("inputs") == inputs:
            progress(f"== {spec.name}: unchanged, reused ({st.get('wall_s', 0):.1f}s earlier)")
            continue
        progress(f"== {spec.name}")
        _prepare_stage_dir(run, spec.name, st, inputs, from_stage if forced else None, progress)
        log = run.stage_dir(spec.name) / "log.txt"
        st.update(status="running", inputs=inputs, started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  log=str(log.relative_to(run.root)))
        run.save()
        t0 = time.time()
        with open(log, "a") as fh:
            def say(msg: str) -> None:
                fh.write(msg + "\n")
                fh.flush()
                progress(f"   {msg}")

            def log_only(msg: str) -> None:  # details that belong in log.txt, not on the console
                fh.write(msg + "\n")
                fh.flush()
            say.log = log_only  # type: ignore[attr-defined]
            try:
                out = spec.run(run, say)
                summary = asdict(out) if is_dataclass(out) else out
            except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised as one line
                fh.write(traceback.format_exc())
                st.update(status="failed", wall_s=time.time() - t0, error=f"{type(exc).__name__}: {exc}")
                run.save()
                if isinstance(exc, KeyboardInterrupt):
                    raise
                raise StageFailed(spec.name, log, exc) from exc
        st.update(status="done", wall_s=time.time() - t0, summary=summary,
                  finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        run.save()
        progress(f"   {spec.name} done in {st['wall_s']:.1f}s")
    return run.state
