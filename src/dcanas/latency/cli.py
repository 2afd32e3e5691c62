"""``dcanas latency build|fit|predict|show``: argument parsing and printing."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any, Optional

from ..argtypes import nonneg_float, nonneg_int, positive_int
from ..errors import UserError
from ..files import ensure_writable_file
from .timing import Timing

MAX_MS = 3.6e6  # an hour per inference: above it a latency_ms is a unit or typing error, not a measurement


def read_rows(path: str | Path, need_latency: bool = True) -> list[tuple[Any, Optional[float], dict[str, str]]]:
    """CSV rows ``genotype,latency_ms`` (genotype: an NB201 arch string, a known name or a genotype JSON
    path): [(genotype, latency or None, the raw row)]."""
    from ..nets.genotype import GenotypeError, load_genotype

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--csv {p} does not exist; give a CSV with a header and the columns genotype,latency_ms")
    try:
        text = p.read_bytes().decode("utf-8-sig")  # a spreadsheet's byte-order mark is not part of the first column's name
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[:exc.start].count(b"\n") + 1
        raise UserError(f"{p} line {line}: byte 0x{exc.object[exc.start]:02x} is not UTF-8; save the CSV as UTF-8 "
                        f"(a spreadsheet's 'CSV UTF-8')") from None
    import io

    with io.StringIO(text, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        wanted = ["genotype"] + (["latency_ms"] if need_latency else [])
        missing = [c for c in wanted if c not in cols]
        if missing:
            raise UserError(f"{p}: no column {', '.join(missing)} in the header ({', '.join(cols) or 'empty'}); "
                            f"the header must name {','.join(wanted)}")
        out = []
        for n, row in enumerate(reader, start=2):
            try:
                g = load_genotype(row["genotype"].strip())
            except (GenotypeError, UserError) as exc:
                raise UserError(f"{p} line {n}: {exc}") from None
            ms: Optional[float] = None
            if row.get("latency_ms") not in (None, ""):
                try:
                    ms = float(row["latency_ms"])
                except ValueError:
                    ms = -1.0
                if not 0 < ms <= MAX_MS:
                    raise UserError(f"{p} line {n}: latency_ms {row['latency_ms']!r} is not a number of milliseconds in "
                                    f"(0, {MAX_MS:g}] (one inference; finite)")
            elif need_latency:
                raise UserError(f"{p} line {n}: latency_ms is empty")
            out.append((g, ms, row))
    if not out:
        raise UserError(f"{p}: no rows after the header")
    return out


def refit(args: argparse.Namespace) -> int:
    """The model fitted again on every network its device's measurement store holds (``latency/store.py``): the
    calibration networks and what runs measured since (derivations before retraining, profiled files)."""
    import copy

    from ..costs.latency import agreement, load_latency_model
    from ..nets.genotype import genotype_from_json
    from .store import at_build_level, read, store_path

    out = ensure_writable_file(args.out, "--out") if args.out else Path(args.model)
    lm = load_latency_model(args.model)
    stored, bad = read(args.model)
    known = {(json_key(genotype_from_json(r["genotype"])), round(float(r["measured_ms"]), 6)) for r in stored}
    rows = list(stored) + [dict(genotype=c["genotype"], measured_ms=c["measured_ms"], source=c.get("source", "calibration"))
                           for c in lm.calibration if (json_key(genotype_from_json(c["genotype"])), round(c["measured_ms"], 6)) not in known]
    new = [r for r in rows if r["source"] != "calibration"]
    counts = ", ".join(f"{sum(r['source'] == s for r in rows)} {s}" for s in ("calibration", "hold", "verdict"))
    note = f"; {bad} unreadable line(s) of {store_path(args.model)} skipped" if bad else ""
    if not new:
        print(f"{args.model}: no measurements beyond its {len(rows)} calibration networks in {store_path(args.model)}{note}; "
              f"nothing to refit (a dcanas run with this model adds them)")
        return 0
    pairs = [(genotype_from_json(r["genotype"]), at_build_level(r)) for r in rows]
    before = agreement([lm.predict_used(genotype_from_json(r["genotype"])) for r in new], [at_build_level(r) for r in new])
    fitted = copy.deepcopy(lm).fit(pairs)
    if lm.structure_theta:  # its counts were checked against the device's graph at the build; the store has no graphs
        fitted.fit_structure([(g, ms, None) for g, ms in pairs])
        fitted.structure_stats.update({k: lm.structure_stats[k] for k in ("checked", "equal") if k in lm.structure_stats})
    for c, r in zip(fitted.calibration, rows):
        c["source"] = r["source"]
    fitted.save(out)
    print(f"refit on {len(rows)} networks ({counts}){note}: before, the model's mean |error| on the {len(new)} networks measured "
          f"since its build was {100 * before['mape']:.1f}%; after, {100 * fitted.stats['mape']:.1f}% on all {len(rows)} "
          f"(bound x{1 + lm.margin:.3f} -> x{1 + fitted.margin:.3f})")
    print(describe(fitted, out))
    return 0


def with_precision(profile, precision: str):
    """The profile with another runtime precision, checked as the profile's own would be."""
    from dataclasses import replace

    from ..export.formats import formats_for

    if profile.runtime.engine == "onnxruntime" and precision != "fp32":
        raise UserError(f"--precision {precision} on {profile.name}: its engine onnxruntime runs fp32 models only; quantized "
                        f"models run on TFLite (a profile with runtime.engine: tflite)")
    formats_for(profile.runtime.engine, precision)
    return replace(profile, runtime=replace(profile.runtime, precision=precision))


def json_key(g) -> str:
    import json

    return json.dumps(g.to_json(), sort_keys=True)


def _eval_net(args: argparse.Namespace):
    """The evaluation network the model is for: as ``dcanas search`` with the same options picks it."""
    from dataclasses import replace

    from ..data.datasets import get_spec
    from ..search.config import SearchConfig, apply_preset, eval_config

    get_spec(args.dataset)
    cfg = apply_preset(SearchConfig(dataset=args.dataset), args.preset)
    cfg = replace(cfg, space=args.space) if args.space else cfg
    cfg = replace(cfg, **{k: v for k, v in dict(eval_C=args.eval_channels, eval_layers=args.eval_layers, seed=args.seed).items()
                          if v is not None})
    return cfg, eval_config(cfg)


def _net_options(p: argparse.ArgumentParser) -> None:
    from ..presets import SEARCH_PRESETS, describe

    p.add_argument("--space", choices=["darts", "nb201"], help="darts or nb201 (default: the preset's, else darts)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--preset", choices=list(SEARCH_PRESETS), help="the search preset whose evaluation network to model: "
                   + describe(SEARCH_PRESETS))
    p.add_argument("--eval-channels", type=positive_int, help="channels of the evaluation network")
    p.add_argument("--eval-layers", type=positive_int, help="layers of the evaluation network")
    p.add_argument("--seed", type=nonneg_int, help="seed of the calibration networks (default 0)")


def cmd_latency(args: argparse.Namespace) -> int:
    from ..nets.ops import SPACE_OPS
    from ..costs.latency import LatencyModel, agreement, load_latency_model

    if args.action == "build":
        from ..devices.schema import load_profile
        from .build import build_latency_model

        if args.out:
            ensure_writable_file(args.out, "--out")
        profile = load_profile(args.device)
        if args.precision and args.precision != profile.runtime.precision:
            profile = with_precision(profile, args.precision)
        cfg, net = _eval_net(args)
        lm, path = build_latency_model(profile, cfg.space, net, tuple(SPACE_OPS[cfg.space]), calibrate=args.calibrate,
                                       timing=Timing(runs=args.runs, rounds=args.rounds, min_seconds=args.min_seconds,
                                                     confirm=args.confirm, max_rounds=args.max_rounds).check(), seed=cfg.seed,
                                       cache_dir=Path(args.cache_dir) if args.cache_dir else None)
        if args.out:
            lm.save(args.out)
        print(describe(lm, args.out or path))
        return 0
    if args.action == "fit":
        ensure_writable_file(args.out, "--out")
        cfg, net = _eval_net(args)
        rows = read_rows(args.csv)
        wrong = [g.space for g, _, _ in rows if g.space != cfg.space]
        if wrong:
            raise UserError(f"{args.csv}: a {wrong[0]} genotype in a --space {cfg.space} fit; give --space {wrong[0]}")
        distinct = len({ms for _, ms, _ in rows}), len({json_key(g) for g, _, _ in rows})
        if len(rows) < 3 or min(distinct) < 2:
            raise UserError(f"{args.csv}: {len(rows)} rows, {distinct[1]} different genotypes, {distinct[0]} different latencies; a fit "
                            f"needs at least 3 measured networks that differ (better: 20 or more); measure more networks")
        lm = LatencyModel.unfitted_work(cfg.space, net.to_json(), device=dict(source=str(args.csv)))
        lm.fit([(g, ms) for g, ms, _ in rows])
        lm.save(args.out)
        print(describe(lm, args.out))
        return 0
    if args.action == "refit":
        return refit(args)
    if args.action == "predict":
        out = ensure_writable_file(args.out, "--out")
        lm = load_latency_model(args.model)
        rows = read_rows(args.csv, need_latency=False)
        wrong = [(n, g.space) for n, (g, _, _) in enumerate(rows, start=2) if g.space != lm.space]
        if wrong:
            raise UserError(f"{args.csv} line {wrong[0][0]}: a {wrong[0][1]} genotype, but {args.model} models the {lm.space} "
                            f"space; give a latency model of the {wrong[0][1]} space (dcanas latency build --space {wrong[0][1]})")
        preds = [lm.predict_used(g) for g, _, _ in rows]
        bad = next(((n, p) for n, p in enumerate(preds, start=2) if not p > 0), None)
        if bad:
            raise UserError(f"{args.model} predicts {bad[1]:.4g} ms for line {bad[0]} of {args.csv}: not a latency (its intercept "
                            f"{lm.intercept:.4g} ms or weights were edited?); rebuild it (dcanas latency build or fit)")
        from ..files import atomic_write

        def write(fh) -> None:
            fields = list(rows[0][2].keys()) + ["predicted_ms"]
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for (_, _, raw), p in zip(rows, preds):
                w.writerow({**raw, "predicted_ms": f"{p:.4f}"})

        atomic_write(out, write, binary=False)
        measured = [(p, ms) for p, (_, ms, _) in zip(preds, rows) if ms is not None]
        line = f"{len(rows)} predictions -> {out}"
        if len(measured) >= 3:
            a = agreement([p for p, _ in measured], [m for _, m in measured])
            line += f"; against the CSV's latency_ms: Spearman {a['spearman']:.3f}, MAPE {100 * a['mape']:.1f}%, within +-10% {100 * a['within_10']:.0f}%"
        print(line)
        return 0
    print(describe(load_latency_model(args.model), args.model))
    return 0


def describe(lm, path) -> str:
    s = lm.stats
    lines = [f"latency model {path}: {lm.space}, basis {lm.basis}, evaluation network C={lm.eval_config['C']}, "
             f"{lm.eval_config['layers']} layers, {lm.eval_config['input_size']}px"]
    key = lm.device.get("key") or {}
    if key:
        dev = key.get("device")
        name = dev.get("hostname") if isinstance(dev, dict) else dev
        lines.append(f"device {name}: {key.get('format')} ({key.get('precision')}), {key.get('threads')} threads, runtimes {key.get('runtimes')}")
    info = lm.device.get("info") or {}
    if info:
        lines.append(f"cpu {info.get('cpu_model')}, {info.get('cores')} cores")
    for c in (lm.device.get("conditions") or [])[:1] + (lm.device.get("conditions") or [])[-1:]:
        lines.append(f"conditions: before {c.get('before')}, after {c.get('after')}")
    if "timing" in lm.device:
        t = lm.device["timing"]
        lines.append(f"timed: {t['rounds']} rounds per model, each {t['warmup']} warm-up runs then at least {t['runs']} runs "
                     f"and {t['min_seconds']:g} s" + (f"; up to {Timing(**t).rounds_at_most} rounds where the two fastest "
                                                       f"differed by more than {100 * t['confirm']:g}%" if t.get("confirm") else ""))
    if "repeat_cv" in lm.device:
        lines.append(f"repeat-to-repeat CV (median over models): {100 * lm.device['repeat_cv']:.2f}%")
    if "figure_noise" in lm.device:
        lines.append(f"timing noise (a kept figure's second-fastest round above it, 90th percentile over models): "
                     f"{100 * lm.device['figure_noise']:.2f}%")
    ref = lm.device.get("reference") or {}
    if ref.get("ms") is not None:
        refs = [c["reference_ms"] for c in lm.device.get("conditions") or [] if c.get("reference_ms") is not None]
        retimed = sum(c.get("attempts", 1) - 1 for c in lm.device.get("conditions") or [])
        lines.append(f"reference network (timed in every chunk; the machine's level): {ref['ms']:.4f} ms, chunks "
                     f"{min(refs):.4f} .. {max(refs):.4f} ms, {retimed} chunk timings repeated for a slow phase")
    if lm.fixed_ms is not None:
        lines.append(f"per-op table: {len(lm.table)} op positions, fixed part {lm.fixed_ms:.4f} ms")
    lines.append(f"theta_0 {lm.intercept:.4f} ms; " + ", ".join(f"{o} x{w:.3f}" for o, w in lm.weights.items()))
    lines.append(f"search bound: prediction x {1 + lm.margin:.3f} (the largest leave-one-out under-prediction on the calibration networks)")
    if s.get("rows"):
        lines.append(f"fit on {s['rows']} networks (ridge {s.get('ridge')}): Spearman {_num(s.get('spearman'))}, "
                     f"Kendall {_num(s.get('kendall'))}, MAPE {100 * s['mape']:.2f}%, within +-10% {100 * s['within_10']:.0f}%")
        if s.get("degenerate"):
            lines.append(f"WARNING: {s['degenerate']}")
    g = lm.graph_stats
    if g.get("rows"):
        lines.append(f"graph model (node counts as the runtime runs the network; predicts built networks, not summed by the search): "
                     f"{len(lm.graph_weights)} op types, fit on {g['rows']} networks (ridge {g.get('ridge')}): leave-one-out "
                     f"Spearman {g['loo'].get('spearman', float('nan')):.3f}, MAPE {100 * g['loo']['mape']:.2f}%")
    st = lm.structure_stats
    if st.get("rows"):
        form = "the table plus" if st.get("form", "table") == "table" else "a weight per node:"
        lines.append(f"structure model ({form} the runtime graph's {', '.join(lm.structure_types)} nodes, counted from the genotype; "
                     f"counts equal the runtime's on {st['equal']} of {st['checked']} networks): fit on {st['rows']} networks (ridge "
                     f"{st.get('ridge')}): leave-one-out Spearman {_num(st['loo'].get('spearman'))}, MAPE {100 * st['loo']['mape']:.2f}%")
    elif st.get("unused"):
        lines.append(f"structure model: not fitted ({st['unused']})")
    return "\n".join(lines)


def _num(v: Optional[float]) -> str:
    return "n/a" if v is None or v != v else f"{v:.3f}"


def add_latency_parser(sub) -> None:
    p = sub.add_parser("latency", help="the latency model: build it on a device, fit it from a CSV, predict, show")
    lsub = p.add_subparsers(dest="action", required=True)
    b = lsub.add_parser("build", help="measure per-op latencies and calibration networks on a device, fit, cache")
    _net_options(b)
    b.add_argument("--device", required=True, help="a shipped profile or a YAML path")
    b.add_argument("--calibrate", type=nonneg_int, default=20, help="random networks measured end to end (default 20)")
    b.add_argument("--runs", type=positive_int, default=Timing.runs, help="timed runs per model and round, at least")
    b.add_argument("--min-seconds", type=nonneg_float, default=Timing.min_seconds,
                   help="seconds of timed runs per model and round, at least (the noise floor of microsecond models)")
    b.add_argument("--rounds", type=positive_int, default=Timing.rounds, help="interleaved rounds (the fastest round's p50 is kept)")
    b.add_argument("--confirm", type=nonneg_float, default=Timing.confirm,
                   help="more rounds for a model whose two fastest rounds differ by more than this fraction (default 0.02; 0: none)")
    b.add_argument("--max-rounds", type=nonneg_int, default=Timing.max_rounds, help="rounds per model at most (default: 3x --rounds)")
    b.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                   help="build the table of this precision's op models (default: the profile's runtime.precision); "
                        "each precision has its own model")
    b.add_argument("--cache-dir", help="default ~/.cache/dcanas/latency")
    b.add_argument("--out", help="also write the model here")
    f = lsub.add_parser("fit", help="fit a latency model from end-to-end measurements: CSV genotype,latency_ms")
    _net_options(f)
    f.add_argument("--csv", required=True)
    f.add_argument("--out", required=True)
    pr = lsub.add_parser("predict", help="predict the latency of the genotypes of a CSV (column genotype)")
    pr.add_argument("--model", required=True)
    pr.add_argument("--csv", required=True)
    pr.add_argument("--out", required=True)
    rf = lsub.add_parser("refit", help="fit a built latency model again on every network measured on its device since "
                         "(the measurement store beside it: derivations timed before retraining, profiled files)")
    rf.add_argument("--model", required=True, help="the cached model (dcanas latency build prints its path)")
    rf.add_argument("--out", help="write the refitted model here (default: in place, so later runs use it)")
    s = lsub.add_parser("show", help="print a latency model, its conditions and its fit")
    s.add_argument("model")
    for q in (b, f, pr, rf, s):
        q.set_defaults(func=cmd_latency)
