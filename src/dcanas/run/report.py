"""The run report: ``report.md`` and a self-contained ``report.html`` (images inlined as data URIs) from the
finished stages' typed outputs; the plots come from ``report/plots.py``, the tables and page from ``report/tables.py``."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from ..costs.metrics import metric_text
from ..devices.schema import DeviceProfile
from ..files import atomic_write
from ..report.plots import (plot_alphas, plot_constraint, plot_genotype, plot_latency, plot_latency_model, plot_learning,
                            plot_op_time, plot_pareto, plot_training)
from ..report.tables import html_page, md_and_html, met_text
from ..report.tables import number_text as n
from .pipeline import RunDir


def receipt_rows(prof: dict) -> list[list[str]]:
    """The profile result's receipt and conditions as rows of a two-column table."""
    r, before, after = prof["receipt"], prof.get("before") or {}, prof.get("after") or {}
    cv = r.get("cv")
    rows = [("device", f"{r.get('device')}" + (" (EMULATED)" if r.get("emulated") else "")),
            ("CPU", f"{r.get('cpu_model')}, {r.get('cores')} cores"), ("OS, kernel", f"{r.get('os')}, {r.get('kernel')}"),
            ("runtime", f"{r.get('runtime')} {r.get('runtime_version')}"), ("providers / delegates", ", ".join(map(str, r.get("providers") or []))),
            ("threads requested / read back", f"{r.get('threads_requested')} / {r.get('threads_readback')}"),
            ("affinity", str(r.get("affinity"))), ("governor", str(r.get("governor"))),
            ("CPU MHz before / after", f"{before.get('cpu_freq_mhz')} / {after.get('cpu_freq_mhz')}"),
            ("temperature C before / after", f"{before.get('temperature_c')} / {after.get('temperature_c')}"),
            ("runs, coefficient of variation", f"{r.get('runs')}, " + ("n/a" if cv is None else f"{100 * cv:.1f}%")
             + (" (HIGH)" if r.get("cv_high") else ""))]
    return [[k, v] for k, v in rows]


def write_report(run: RunDir, profile: DeviceProfile, outputs: dict[str, Any]) -> dict[str, Path]:
    """report.md and a self-contained report.html from the finished stages' typed outputs records."""
    from ..nets.ops import SPACE_OPS

    d = run.stage_dir("report")
    s, t, e, p, v = (outputs[k] for k in ("search", "train", "export", "profile", "verdict"))
    search = json.loads(run.path(s.search_log).read_text())
    genotype = json.loads(run.path(s.genotype).read_text())
    train = json.loads(run.path(t.train_log).read_text())
    prof = json.loads(run.path(p.result).read_text())
    verdict = json.loads(run.path(v.verdict).read_text())

    pareto = [dict(name="DCA-NAS (searched)", params=t.params, test_top1=t.test_top1)]
    pareto += [dict(name=b["arch"], params=b["params"], test_top1=b["test_top1"]) for b in t.baselines]
    figs = [
        ("The derived cells (genotype)", plot_genotype(genotype, d / "genotype.png")),
        ("Architecture weights over the search", plot_alphas(search, list(SPACE_OPS[genotype["space"]]), d / "alphas.png")),
        ("What the search learned: entropy, what pushed alpha, margins", plot_learning(search, d / "learning.png")),
        ("Expected cost k_s against K', and lambda", plot_constraint(search, d / "constraint.png")),
        ("Retraining curves", plot_training(train, d / "training.png")),
        ("Accuracy against parameters (paper Fig. 2)", plot_pareto(pareto, profile.budget.get("params"), d / "pareto.png")),
        ("On-device latency distribution", plot_latency(prof, profile.budget.get("latency_ms"), d / "latency.png")),
    ]
    figs = [(title, f) for title, f in figs if f is not None]
    if p.op_map:
        figs.append(("Where the time goes on the device: per cell and per edge (onnxruntime's node profile)",
                     plot_op_time(json.loads(run.path(p.op_map).read_text()), genotype, d / "op_time.png")))
    lat = outputs.get("latency")
    if lat is not None and lat.model:
        model = json.loads(run.path(lat.model).read_text())
        predicted = (verdict.get("predicted") or {}).get("latency_ms")
        derived = (predicted, prof["latency_ms"]["p50"]) if predicted is not None else None
        figs.append(("Latency model: predicted vs measured", plot_latency_model(model, derived, d / "latency_model.png")))
    verdict_rows = [[r["budget"], n(r["limit"]), n(r["measured"]), n(r["margin"]), r["source"], met_text(r["met"])] for r in v.rows]
    vmd, vhtml = md_and_html(verdict_rows, ["budget", "limit", "measured", "margin", "source", "met"])
    cc = v.cross_check
    cmd_, chtml = md_and_html([["params", n(cc["params"]), n(cc["fvcore_params"])], ["FLOPs (MACs)", n(cc["flops"]), n(cc["fvcore_flops"])]],
                         ["derived network", "analytic counter", "fvcore"])
    ex_rows = [[r["format"], r["file"], f"{r.get('size_kb', 0):.1f}", f"{r['export_s']:.1f}", f"{r.get('max_abs_diff', float('nan')):.2e}",
                f"{r.get('top1_agreement', float('nan')):.3f}", "passed" if r["passed"] else "FAILED"] for r in e.rows]
    emd, ehtml = md_and_html(ex_rows, ["format", "file", "size (KB)", "export (s)", "max abs diff", "top-1 agreement", "ok"])
    tables = [("Cost cross-check", cmd_, chtml), ("Export", emd, ehtml)]
    if prof.get("receipt"):  # what the latency figure depended on besides the model, so that two numbers can be compared
        rmd, rhtml = md_and_html(receipt_rows(prof), ["receipt of the latency figure", "value"])
        tables.insert(0, ("Receipt", rmd, rhtml))
    if s.device_checks:  # a latency search: each derivation timed on the device before retraining (latency/hold.py)
        hold_rows = [[str(k + 1), n(c["derivation_budget_ms"]), n(c["predicted_ms"]), n(c["measured_ms"]),
                      n(c.get("level")), {"within": "yes", "noise": "within noise"}.get(c.get("decision"), "no")] for k, c in enumerate(s.device_checks)]
        hmd, hhtml = md_and_html(hold_rows, ["derivation", "derived under (ms)", "predicted (ms)", "measured, untrained (ms)",
                                        "reference time vs build", "within budget"])
        tables.insert(0, ("Derived network timed on the device before retraining", hmd, hhtml))
    err = verdict.get("latency_model_error")
    if err:  # the latency model against what this run measured (latency/store.py keeps them for `latency refit`)
        err_rows = [[r["network"], n(r["predicted_ms"]), n(r["measured_ms"]), f"{100 * r['error']:+.1f}%"] for r in err["rows"]]
        emd2, ehtml2 = md_and_html(err_rows, ["network", "predicted (ms)", "measured (ms)", "error"])
        caption = f"\n\nmean |error| {100 * err['mape']:.1f}%" + (f"; recorded in the measurement store of {err['store']}" if err.get("store") else "")
        tables.insert(0, ("Latency model on this run's measurements", emd2 + caption, ehtml2 + f"<p>{html.escape(caption.strip())}</p>"))
    if p.comparison:
        from ..profile.compare import COLUMNS

        cmp = json.loads(run.path(p.comparison).read_text())
        cols = [c for c in COLUMNS if c not in ("model", "note")]
        cmd2, chtml2 = md_and_html([[n(r.get(c)) for c in cols] for r in cmp["rows"]], cols)
        notes = [f"{r['model']}: {r['note']}" for r in cmp["rows"] if r.get("note")] + cmp["thread_check"]
        tables.append((f"Every export on {cmp['device']}", cmd2 + "".join(f"\n\n{n}" for n in notes),
                       chtml2 + "".join(f"<p>{html.escape(n)}</p>" for n in notes)))
        if cmp.get("ship"):  # the fastest export that passed its accuracy gate and met every budget here
            sh = cmp["ship"]
            smd2, shtml2 = md_and_html([[str(sh["file"] or "none"), n(sh.get("p50_ms")), n(sh.get("agreement")), sh["line"]]],
                                       ["file to ship", "p50 (ms)", "top-1 agreement", "why"])
            tables.append(("File to ship", smd2, shtml2))
    st_rows = [[name, st.get("status", ""), f"{st.get('wall_s', 0):.1f}"] for name, st in run.state["stages"].items() if name != "report"]
    smd, shtml = md_and_html(st_rows, ["stage", "status", "wall (s)"])
    verdict_line = f"**Verdict on {verdict['device']}: {'PASS — every budget met' if v.passed else 'FAIL — a budget was missed'}**"
    if verdict.get("emulated"):
        verdict_line += " (emulated device: latency and memory are not real-hardware numbers)"
    summary = (f"Device **{profile.name}** ({profile.description}). Searched {s.metric} budget K_d = {metric_text(s.metric, s.K_d)} "
               f"(K' = {metric_text(s.metric, s.K_prime)}, LUG: {s.lug}); derived network: {s.derived_params:,} params, "
               f"{s.derived_flops:,} MACs; test top-1 {100 * t.test_top1:.2f}% on {run.config['dataset']}; "
               f"{prof['engine']} on {prof['machine']}: p50 {prof['latency_ms']['p50']:.3f} ms, peak RSS {prof['peak_rss_mb']:.1f} MB.")
    if search["summary"].get("learned"):  # search/learned.py: whether the architecture weights separated
        summary += f" Search (best seed): {search['summary']['learned']}."
    md = ["# dcanas run report", "", verdict_line, "", summary, "", "## Verdict", "", vmd, ""]
    for title, tmd, _ in tables + [("Stages", smd, shtml)]:
        md += [f"## {title}", "", tmd, ""]
    for title, p in figs:
        md += [f"## {title}", "", f"![{title}]({p.name})", ""]
    md_path = atomic_write(d / "report.md", lambda fh: fh.write("\n".join(md)), binary=False)

    imgs = "".join(f"<h2>{html.escape(t)}</h2><img alt=\"{html.escape(t)}\" src=\"data:image/png;base64,"
                   f"{base64.b64encode(p.read_bytes()).decode()}\">" for t, p in figs)
    sections = "".join(f"<h2>{html.escape(title)}</h2>{th}" for title, _, th in tables + [("Stages", smd, shtml)])
    body = (f"<p>{html.escape(summary.replace('**', ''))}</p><h2>Verdict</h2>{vhtml}{sections}{imgs}"
            "<script>document.body.dataset.images=[...document.images].filter(i=>i.naturalWidth>0).length</script>")
    page = html_page(f"dcanas run report: {profile.name}", verdict_line.replace("**", ""), v.passed, body)
    html_path = atomic_write(d / "report.html", lambda fh: fh.write(page), binary=False)
    return {"markdown": md_path, "html": html_path}
