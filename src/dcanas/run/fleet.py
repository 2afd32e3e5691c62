"""A fleet: one ``dcanas run`` (or ``dcanas profile``) over several devices.

Devices whose searches would be identical (the same search configuration: budgets, evaluation network,
size-model format, preset, seeds; a latency budget is its device's own) share one search and one
retraining: the first reachable device of the group runs them, the others adopt its finished stages.
Each device then exports its own format, is profiled and gets its own verdict in its own run folder
(``OUT/<device>/``). A device that cannot be reached, or whose stage fails, fails its own column only;
``OUT/report.md`` and ``report.html`` hold a column per device, ``OUT/fleet.json`` the same as data.
The exit code is 0 only when every device passed.
"""
from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from ..devices.schema import DeviceProfile, load_profile
from ..errors import UserError
from ..files import atomic_write, write_json
from .pipeline import RunDir, StageFailed, hash_inputs, run_pipeline

Say = Callable[[str], None]
SHARED_STAGES = ("search", "train")  # what devices with the same search configuration share


def parse_devices(text: str) -> list[str]:
    """``--device``: one profile, a comma-separated list, or a fleet YAML (``devices: [rpi4, ./lab-pi.yaml]``,
    paths relative to the fleet file)."""
    if "," in text:
        names = [t.strip() for t in text.split(",")]
        if not all(names):
            raise UserError(f"--device {text!r}: an empty name in the list; give profile names or YAML paths separated by commas")
        return names
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            return [text]  # load_profile says what is wrong with it
        if isinstance(raw, dict) and "devices" in raw:
            devs = raw["devices"]
            if not isinstance(devs, list) or not devs or not all(isinstance(d, str) and d for d in devs):
                raise UserError(f"{path}: 'devices' must be a non-empty list of profile names or YAML paths, got {devs!r}")
            return [str((path.parent / d).resolve()) if (path.parent / d).is_file() else d for d in devs]
    return [text]


def load_fleet(names: list[str]) -> list[DeviceProfile]:
    profiles = [load_profile(n) for n in names]
    seen: dict[str, str] = {}
    for n, p in zip(names, profiles):
        if p.name in seen:
            raise UserError(f"devices {seen[p.name]!r} and {n!r} are both named {p.name!r}; each device of a fleet needs its own name "
                            f"(its run folder is OUT/<name>)")
        seen[p.name] = n
    return profiles


@dataclass
class Member:
    profile: DeviceProfile
    stages: Any                        # stages.Stages
    key: str                           # identical keys: identical searches
    status: str = "pending"            # pending, unreachable, failed, passed, FAIL (a budget missed)
    error: Optional[str] = None
    shared_with: list[str] = field(default_factory=list)


def search_key(stages: Any) -> str:
    """Two devices share the search when everything it depends on is equal; a latency model is per device."""
    cfg = stages.search_cfg.to_json()
    own = stages.profile.name if stages.search_cfg.metric == "latency_ms" else None
    return hash_inputs(cfg, stages.cfg.seeds, stages.cfg.cache_dir, own)[:12]


def adopt(src: RunDir, dst: RunDir, names: tuple[str, ...], say: Say) -> None:
    """Copy the finished shared stages (folders and state) of the group's first device into another's run."""
    for name in names:
        st = src.state["stages"][name]
        mine = dst.state.get("stages", {}).get(name, {})
        if mine.get("status") == "done" and all(mine.get(k) == st.get(k) for k in ("inputs", "finished")):
            continue  # already this very result
        target = dst.root / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(src.root / name, target)
        dst.stage_state(name).clear()
        dst.stage_state(name).update({**st, "shared_from": src.root.name})
        say(f"[{dst.root.name}] {name}: adopted from {src.root.name} (same search configuration)")
    dst.save()


def _reachable(profile: DeviceProfile) -> Optional[str]:
    from .stages import connection_check

    try:
        connection_check(profile)
    except Exception as exc:  # noqa: BLE001 - the device's column says why
        return f"{type(exc).__name__}: {exc}"
    return None


def _follower_from(from_stage: Optional[str]) -> Optional[str]:
    """A device that adopts the shared stages never redoes them itself: ``--from search`` redoes the group's
    search once, on its first device, and the others export, profile and judge again from it."""
    from .stages import STAGES

    return STAGES[STAGES.index(SHARED_STAGES[-1]) + 1] if from_stage in STAGES[:STAGES.index(SHARED_STAGES[-1]) + 1] else from_stage


def run_fleet(members: list[Member], out: Path, *, config: dict[str, Any], resume: bool, from_stage: Optional[str],
              say: Say) -> list[Member]:
    from .stages import VerdictOutputs

    for m in members:
        if m.profile.connection.transport != "local":
            say(f"checking the connection to {m.profile.name} ...")
            why = _reachable(m.profile)
            if why:
                m.status, m.error = "unreachable", why
                say(f"{m.profile.name}: cannot be reached ({why}); its column fails, the others go on")
    groups: dict[str, list[Member]] = {}
    for m in members:
        if m.status == "pending":
            groups.setdefault(m.key, []).append(m)
    for key, group in groups.items():
        names = [m.profile.name for m in group]
        say(f"== search group {key}: {', '.join(names)}" + (" (one search, shared)" if len(group) > 1 else ""))
        leader: Optional[RunDir] = None
        for m in group:
            m.shared_with = [n for n in names if n != m.profile.name]
            run = RunDir(out / m.profile.name, {**config, "device": m.profile.source, "fleet_group": key})
            if leader is not None:
                adopt(leader, run, SHARED_STAGES, say)
            say(f"=== {m.profile.name}")
            try:
                run_pipeline(run, m.stages.specs(), resume=resume or leader is not None,
                             from_stage=from_stage if leader is None else _follower_from(from_stage),
                             progress=lambda msg, n=m.profile.name: say(f"[{n}] {msg.strip()}"))
                m.status = "passed" if run.outputs("verdict", VerdictOutputs).passed else "FAIL"
            except StageFailed as exc:
                m.status, m.error = "failed", str(exc)
                say(f"{m.profile.name}: {exc}")
            if leader is None and all(run.state.get("stages", {}).get(s, {}).get("status") == "done" for s in SHARED_STAGES):
                leader = run
            elif leader is None:
                for rest in group[group.index(m) + 1:]:
                    rest.status, rest.error = "failed", f"the shared search on {m.profile.name} failed: {m.error}"
                break
    return members


# ---- the fleet's report: a column per device -----------------------------------------------------------

def _stage(run_root: Path, name: str) -> dict[str, Any]:
    p = run_root / "run.json"
    st = json.loads(p.read_text()).get("stages", {}).get(name, {}) if p.is_file() else {}
    return st.get("summary") or {} if st.get("status") == "done" else {}


def device_column(m: Member, out: Path) -> dict[str, Any]:
    """One device's figures for the fleet table (what its finished stages recorded)."""
    from ..presets import metric_text

    root = out / m.profile.name
    s, t, e, p, v = (_stage(root, n) for n in ("search", "train", "export", "profile", "verdict"))
    col: dict[str, Any] = {"device": m.profile.name, "status": m.status, "error": m.error, "emulated": m.profile.emulated,
                           "shares search with": ", ".join(m.shared_with) or "-",
                           "runtime": f"{m.profile.runtime.engine} {m.profile.runtime.precision}, {m.profile.runtime.threads} threads"}
    if s:
        col["searched budget"] = f"{s['metric']} {metric_text(s['metric'], s['K_d'])}"
        col["derived params"] = s["derived_params"]
        col["derived MACs"] = s["derived_flops"]
    if t:
        col["test top-1"] = round(100 * t["test_top1"], 2)
    if e:
        name = Path(e["device_artifact"]).name
        col["profiled file"] = name + "".join(f" ({r['size_kb']:,.1f} KB)" for r in e["rows"] if r["file"] == name)
    if p:
        col["p50 (ms)"] = p["latency_ms"]["p50"]
        col["p90 (ms)"] = p["latency_ms"]["p90"]
        col["peak RSS (MB)"] = p["peak_rss_mb"]
        col["machine"] = p["machine"]
    for r in v.get("rows", []):
        col[r["budget"]] = ("met" if r["met"] else "MISSED" if r["met"] is False else "not counted") + (
            f" ({_text(r['measured'])} / {_text(r['limit'])})" if isinstance(r["measured"], (int, float)) and not isinstance(r["limit"], str) else "")
    col["report"] = f"{m.profile.name}/report/report.html" if (root / "report" / "report.html").is_file() else "-"
    return col


def _text(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def column_table(cols: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of (quantity, device 1, device 2, ...) from per-device columns, rows in first-seen order."""
    keys: list[str] = []
    for c in cols:
        keys += [k for k in c if k not in keys and k != "device"]
    return [[k] + [_text(c.get(k)) for c in cols] for k in keys]


def write_fleet_report(members: list[Member], out: Path, title: str) -> dict[str, Path]:
    from ..report.page import _table

    cols = [device_column(m, out) for m in members]
    rows = column_table(cols)
    md_table, html_table = _table(rows, [""] + [c["device"] for c in cols])
    passed = all(m.status == "passed" for m in members)
    failed = ", ".join(m.profile.name for m in members if m.status != "passed")
    line = "Fleet verdict: " + ("PASS: every device met every budget" if passed else f"FAIL: {failed} did not pass")
    write_json(out / "fleet.json", dict(passed=passed, devices=cols))
    md = [f"# {title}", "", f"**{line}**", "", md_table, ""] + [f"- {m.profile.name}: {m.error}" for m in members if m.error]
    md_path = atomic_write(out / "report.md", lambda fh: fh.write("\n".join(md) + "\n"), binary=False)
    links = "".join(f"<li><a href=\"{html.escape(c['report'])}\">{html.escape(c['device'])}</a></li>" for c in cols if c["report"] != "-")
    errors = "".join(f"<li>{html.escape(m.profile.name)}: {html.escape(m.error)}</li>" for m in members if m.error)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:4px 10px;text-align:right}}td:first-child{{text-align:left}}th{{background:#eee}}
td.ok{{background:#d8f0d8}}td.bad{{background:#f6d0d0;font-weight:bold}}
.verdict{{font-size:1.3em;padding:.5em;background:{'#e6f4e6' if passed else '#fbe4e4'}}}</style></head><body>
<h1>{html.escape(title)}</h1><p class="verdict" id="verdict">{html.escape(line)}</p>{html_table}
<h2>Errors</h2><ul>{errors or '<li>none</li>'}</ul><h2>Per-device reports</h2><ul>{links}</ul></body></html>"""
    html_path = atomic_write(out / "report.html", lambda fh: fh.write(page), binary=False)
    return {"markdown": md_path, "html": html_path, "passed": passed}  # type: ignore[dict-item]


def fleet_members(names: list[str], make_stages: Callable[[DeviceProfile], Any]) -> list[Member]:
    members = []
    for p in load_fleet(names):
        st = make_stages(p)
        members.append(Member(profile=p, stages=st, key=search_key(st)))
    return members


def profile_fleet(names: list[str], model: Path, *, runs: int, warmup: int, percentile: str, any_format: bool,
                  threads: Optional[int], say: Say) -> tuple[list[dict[str, Any]], bool]:
    """``dcanas profile --device a,b MODEL``: the model on each device; a device that fails fails its column."""
    from ..profile.remote import profile_model
    from ..profile.verdict import verdict

    cols = []
    for p in load_fleet(names):
        col: dict[str, Any] = {"device": p.name}
        try:
            res = profile_model(p, model, runs=runs, warmup=warmup, any_format=any_format, threads=threads,
                                progress=lambda msg, n=p.name: say(f"[{n}] {msg}"))
            v = verdict(p, model, res, percentile)
            col.update(status="passed" if v["passed"] else "FAIL", engine=f"{res['engine']} {res['engine_version']}",
                       machine=res["machine"], threads=res["threads"], **{"p50 (ms)": res["latency_ms"]["p50"],
                       "p90 (ms)": res["latency_ms"]["p90"], "peak RSS (MB)": res["peak_rss_mb"]})
            for r in v["rows"]:
                col[r["budget"]] = "met" if r["met"] else "MISSED" if r["met"] is False else "not counted"
            col["warnings"] = "; ".join(res.get("warnings", [])) or "-"
        except Exception as exc:  # noqa: BLE001 - one device's failure is its column's, not the fleet's
            col.update(status="failed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            say(f"[{p.name}] failed: {col['error']}")
        cols.append(col)
    return cols, all(c["status"] == "passed" for c in cols)


def format_columns(cols: list[dict[str, Any]]) -> str:
    rows = column_table(cols)
    head = [""] + [c["device"] for c in cols]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows])

