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

from ..devices.fleet import load_fleet
from ..devices.schema import DeviceProfile
from ..costs.metrics import metric
from ..files import atomic_write, write_json
from ..report.tables import column_table, html_page, md_and_html, met_text, number_text
from .pipeline import RunDir, StageFailed, hash_inputs, run_pipeline

Say = Callable[[str], None]
SHARED_STAGES = ("search", "train")  # what devices with the same search configuration share


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
    own = stages.profile.name if metric(stages.search_cfg.metric).per_device else None
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
    from .records import STAGES

    return STAGES[STAGES.index(SHARED_STAGES[-1]) + 1] if from_stage in STAGES[:STAGES.index(SHARED_STAGES[-1]) + 1] else from_stage


def run_fleet(members: list[Member], out: Path, *, config: dict[str, Any], resume: bool, from_stage: Optional[str],
              say: Say) -> list[Member]:
    from .records import VerdictOutputs

    remote = [m for m in members if m.profile.connection.transport != "local"]
    if remote:  # side by side: a black-hole device costs its connect timeout once, not once per device before it
        from concurrent.futures import ThreadPoolExecutor

        say(f"checking the connections to {', '.join(m.profile.name for m in remote)} ...")
        with ThreadPoolExecutor(max_workers=min(16, len(remote))) as pool:
            for m, why in zip(remote, pool.map(lambda m: _reachable(m.profile), remote)):
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
    from ..costs.metrics import metric_text

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
        counted = isinstance(r["measured"], (int, float)) and not isinstance(r["limit"], str)
        col[r["budget"]] = met_text(r["met"]) + (f" ({number_text(r['measured'])} / {number_text(r['limit'])})" if counted else "")
    col["report"] = f"{m.profile.name}/report/report.html" if (root / "report" / "report.html").is_file() else "-"
    return col


def write_fleet_report(members: list[Member], out: Path, title: str) -> dict[str, Path]:
    cols = [device_column(m, out) for m in members]
    rows = column_table(cols)
    md_table, html_table = md_and_html(rows, [""] + [c["device"] for c in cols])
    passed = all(m.status == "passed" for m in members)
    failed = ", ".join(m.profile.name for m in members if m.status != "passed")
    line = "Fleet verdict: " + ("PASS: every device met every budget" if passed else f"FAIL: {failed} did not pass")
    write_json(out / "fleet.json", dict(passed=passed, devices=cols))
    md = [f"# {title}", "", f"**{line}**", "", md_table, ""] + [f"- {m.profile.name}: {m.error}" for m in members if m.error]
    md_path = atomic_write(out / "report.md", lambda fh: fh.write("\n".join(md) + "\n"), binary=False)
    links = "".join(f"<li><a href=\"{html.escape(c['report'])}\">{html.escape(c['device'])}</a></li>" for c in cols if c["report"] != "-")
    errors = "".join(f"<li>{html.escape(m.profile.name)}: {html.escape(m.error)}</li>" for m in members if m.error)
    body = f"{html_table}<h2>Errors</h2><ul>{errors or '<li>none</li>'}</ul><h2>Per-device reports</h2><ul>{links}</ul>"
    page = html_page(title, line, passed, body, width=1200)
    html_path = atomic_write(out / "report.html", lambda fh: fh.write(page), binary=False)
    return {"markdown": md_path, "html": html_path, "passed": passed}  # type: ignore[dict-item]


def fleet_members(names: list[str], make_stages: Callable[[DeviceProfile], Any]) -> list[Member]:
    members = []
    for p in load_fleet(names):
        st = make_stages(p)
        members.append(Member(profile=p, stages=st, key=search_key(st)))
    return members


