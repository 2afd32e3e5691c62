"""Atomic writes: write to a temporary file in the same folder, fsync, then rename.

A crash leaves either the old file or the new one under the final name, never half of one. The
temporary name carries the writer's pid (``.NAME.PID.XXXX.tmp``), so a later start can remove
the leftovers of writers that died (:func:`clean_stale_tmp`) without touching a live writer's.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from .errors import UserError

TMP_RE = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


def atomic_write(path: str | Path, write: Callable[[Any], None], binary: bool = True, mode: Optional[int] = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_tmp(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Remove ``.NAME.PID.XXXX.tmp`` files whose writer is no longer running; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in (folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")):
        m = TMP_RE.match(p.name)
        if m and p.is_file() and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def ensure_writable_dir(path: str | Path, what: str) -> Path:
    """Create ``path`` if needed and prove it writable now, before any work (one line otherwise)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{what} {path} is not writable ({exc.strerror}); choose a folder you can write to") from None
    return path


def ensure_writable_file(path: str | Path, what: str) -> Path:
    """A file path that can be written now, before any work: not a folder, its folder writable (one line otherwise)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name (e.g. {path / 'out.json'})")
    ensure_writable_dir(path.parent if str(path.parent) else ".", f"the folder of {what}")
    return path


@contextmanager
def exclusive_lock(path: str | Path, busy: str, fix: str) -> Iterator[None]:
    """One writer at a time: an flock on ``path`` (holding this process's pid) while the block runs. A second process
    gets one line: ``busy``, the pid holding the lock, then ``fix``. The kernel drops the lock when its holder dies."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise UserError(f"{busy} (pid {holder} holds {path}); {fix}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write(path, lambda fh: json.dump(data, fh, indent=2), binary=False)


def torch_save(path: str | Path, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))


def torch_load(path: str | Path) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path, fix: str) -> Any:
    """A checkpoint that must load; a truncated or foreign file is one line naming it and ``fix``."""
    try:
        return torch_load(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is reported the same way
        raise UserError(f"checkpoint {path} is corrupt or not a dcanas checkpoint ({type(exc).__name__}); {fix}") from None


def resume_state(path: str | Path, resume: bool, expect: dict[str, Any], what: str,
                 upgrade: Optional[Callable[[dict[str, Any]], dict[str, Any]]] = None) -> Optional[dict[str, Any]]:
    """The checkpoint to continue from, or None to start afresh. Shared by every resumable loop:
    with ``resume`` the checkpoint must load and match ``expect`` (its config, ...), after ``upgrade``
    (a checkpoint written before an option existed, given that option's value then); without it an
    existing checkpoint is never overwritten silently."""
    path = Path(path)
    if resume and path.is_file():
        state = load_checkpoint(path, f"delete it to start the {what} over, or choose another --out")
        state = upgrade(state) if upgrade is not None else state
        if any(state.get(k) != v for k, v in expect.items()):
            raise UserError(f"{path} was written by a {what} with other options; choose another --out, "
                            f"or delete {path.parent} to start over")
        return state
    if path.exists():
        raise UserError(f"{path.parent} already holds a {what}; pass --resume to continue it or choose another --out")
    return None


def file_sha256(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def crash_point(steps_done: int, stop_after_steps: Optional[int] = None) -> None:
    """The deterministic crash for resume tests: after ``stop_after_steps`` optimizer steps (or
    ``DCANAS_EXIT_AFTER_STEPS`` in the environment, for a subprocess) the process ends abruptly,
    like ``kill -9``: no cleanup, no checkpoint of the epoch under way."""
    limit = stop_after_steps if stop_after_steps is not None else os.environ.get("DCANAS_EXIT_AFTER_STEPS")
    if limit is not None and steps_done >= int(limit):
        os._exit(137)


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cache_dir(kind: str) -> Path:
    """Where dcanas caches ``kind`` (lug, latency): under $XDG_CACHE_HOME, else ~/.cache."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dcanas" / kind
