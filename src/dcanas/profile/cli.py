"""``dcanas profile``: argument parsing and printing."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..argtypes import nonneg_float, nonneg_int, positive_float, positive_int
from ..errors import UserError
from ..runtime import runner as R


def cmd_profile(args: argparse.Namespace) -> int:
    from ..devices.schema import load_profile
    from .remote import profile_model
    from .verdict import format_table, verdict

    from ..devices.fleet import parse_devices
    from .compare import compare, format_comparison, parse_threads, to_csv

    names = parse_devices(args.device)
    if names != [args.device]:
        return cmd_profile_fleet(args, names)
    profile = load_profile(args.device)
    threads = parse_threads(args.threads) if args.threads else [profile.runtime.threads]
    if len(args.model) > 1 or len(threads) > 1 or args.csv:
        if args.min_seconds or args.affinity or args.timeout:
            raise UserError("--min-seconds, --affinity and --timeout apply to one model at one thread count, not to a comparison")
        res = compare(profile, [Path(m) for m in args.model], threads, runs=args.runs, warmup=args.warmup,
                      cooldown_s=args.cooldown, percentile=args.percentile, progress=lambda m: print(m, file=sys.stderr, flush=True))
        if args.csv:
            from ..files import atomic_write
            atomic_write(args.csv, lambda fh: fh.write(to_csv(res)), binary=False)
        print(json.dumps(res) if args.json else format_comparison(res))
        return 0 if res["passed"] else 1
    [model] = args.model
    from .sustained import drift_line, parse_seconds, plot_sustained, windows_table

    duration = parse_seconds(args.duration, "--duration") if args.duration else (profile.runtime.sustained_s or 0.0)
    window = parse_seconds(args.window, "--window")
    if args.plot and not duration:
        raise UserError("--plot draws latency, frequency and temperature over a sustained run; give --duration too (e.g. 10m)")
    result = profile_model(profile, model, runs=args.runs, warmup=args.warmup,
                           min_seconds=args.min_seconds, affinity=args.affinity, timeout_s=args.timeout, any_format=args.any_format,
                           threads=threads[0] if args.threads else None, ops=args.ops, given=model_inputs(args),
                           duration_s=duration, window_s=window)
    windows = (result.get("sustained") or {}).get("windows") or []
    if windows:
        result["sustained"]["drift"] = drift_line(windows)
        if args.plot:
            result["sustained"]["plot"] = str(plot_sustained(windows, f"{result['model']} on {profile.name}, {duration:g} s", Path(args.plot)))
    if args.ops:
        from .ops import map_ops

        result["op_map"] = map_ops(Path(model), result.get("op_profile"))
    judged = result
    if windows:  # the sustained tail: the budget is judged on the last window, after the device has been under load
        tail = windows[-1]
        judged = {**result, "latency_ms": {**result["latency_ms"], **{q: tail[q] for q in ("p50", "p90", "p99")}}}
    v = verdict(profile, Path(model), judged, args.percentile)
    if windows:
        for row in v["rows"]:
            if row["budget"].startswith("latency_ms"):
                row["source"] += f", last {tail['t_end_s'] - (windows[-2]['t_end_s'] if len(windows) > 1 else 0):.0f} s of {duration:g} s back to back"
    if args.json:
        print(json.dumps({**result, "verdict": v}))
    else:
        lat = result["latency_ms"]
        print(f"{result['model']} on {profile.name} ({result['engine']} {result['engine_version']}, {result['machine']}, "
              f"{result['cpu_model']}, {result['threads']} threads): latency p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f} ms "
              f"(mean {lat['mean']:.3f} ± {lat['std']:.3f}, {result['timed_runs']} runs), peak RSS {result['peak_rss_mb']:.1f} MB, "
              f"load {result['load_ms']:.1f} ms")
        print(describe_io(result))
        if windows:
            print(windows_table(windows))
            print(result["sustained"]["drift"] or "no drift: the last window's p50 is within the first window's run-to-run spread")
            if args.plot:
                print(f"plot: {args.plot}")
        if result.get("note"):
            print(result["note"])
        for w in result.get("warnings", []):
            print(f"WARNING: {w}")
        print(format_table(v))
        if args.ops:
            from .ops import format_ops

            print(format_ops(result["op_map"]))
    return 0 if v["passed"] else 1


def model_inputs(args: argparse.Namespace):
    """--inputs, --reference, --input-shape, --batch and --int-range as the runner takes them."""
    from .remote import ModelInputs

    for shape in args.input_shape or []:
        name, sep, dims = shape.rpartition("=")
        if not sep or not name:
            raise UserError(f"--input-shape {shape!r}: give NAME=1x3x224x224 (the input's name, then its shape)")
        try:
            R.parse_shape(dims)
        except ValueError as exc:
            raise UserError(f"--input-shape {shape!r}: {exc}") from None
    lo, hi = args.int_range or (0, 100)
    if lo > hi:
        raise UserError(f"--int-range {lo} {hi}: LO must not exceed HI")
    for what, f in (("--inputs", args.inputs), ("--reference", args.reference)):
        if f and not Path(f).is_file():
            raise UserError(f"{what} {f} does not exist; give an .npz of arrays named like the model's "
                            f"{'inputs' if what == '--inputs' else 'outputs'} (numpy.savez)")
    return ModelInputs(inputs=Path(args.inputs) if args.inputs else None, reference=Path(args.reference) if args.reference else None,
                       shapes=tuple(args.input_shape or ()), batch=args.batch, int_range=(lo, hi))


def describe_io(result: dict) -> str:
    """The inputs the model was timed on, every output's check against the reference, and the receipt."""
    lines = [f"inputs ({result.get('input_source', 'random')}): " + ", ".join(
        f"{i['name']} {i['dtype']} {'x'.join(map(str, i['shape']))}" for i in result.get("inputs", []))]
    lines += [f"note: {n}" for n in result.get("input_notes", [])]
    checks = result.get("output_checks")
    if checks is None:
        lines.append("outputs: " + ", ".join(f"{o['name']} {'x'.join(map(str, o['shape']))}" for o in result.get("outputs", []))
                     + "; no reference (--reference FILE.npz checks them)")
    for c in checks or []:
        if not c.get("reference"):
            lines.append(f"output {c['name']}: no reference array for it")
        elif "shape_mismatch" in c:
            lines.append(f"output {c['name']}: shape {'x'.join(map(str, c['shape']))}, the reference's "
                         f"{'x'.join(map(str, c['shape_mismatch']))}: not compared")
        else:
            lines.append(f"output {c['name']}: max abs diff {c['max_abs_diff']:.3g} vs {result.get('reference_file')}"
                         + ("" if c.get("top1_match") is None else f", top-1 {'agrees' if c['top1_match'] else 'DIFFERS'}"))
    r = result.get("receipt") or {}
    if r:
        cv = r.get("cv")
        lines.append(f"receipt: {r.get('runtime')} {r.get('runtime_version')} on {r.get('providers')}, threads {r.get('threads_requested')}"
                     f" (read back {r.get('threads_readback') if r.get('threads_readback') is not None else 'n/a'}), affinity "
                     f"{r.get('affinity')}, governor {r.get('governor')}, {r.get('runs')} runs, CV "
                     f"{'n/a' if cv is None else f'{100 * cv:.1f}%'}{' (HIGH: noisy)' if r.get('cv_high') else ''}; "
                     f"{r.get('os')}, {r.get('cores')} cores" + ("; EMULATED" if r.get("emulated") else ""))
        lines += [f"runtime log: {line}" for line in r.get("runtime_log", [])]
    return "\n".join(lines)


def cmd_profile_fleet(args: argparse.Namespace, names: list[str]) -> int:
    """``dcanas profile --device a,b MODEL``: one model on each device, a column per device."""
    from ..report.tables import format_columns
    from .fleet import profile_fleet

    if len(args.model) > 1 or (args.threads and "," in args.threads) or args.csv or args.ops:
        raise UserError("a fleet profile measures one model at one thread count per device; give one MODEL (compare models "
                        "or thread counts on one device at a time, and --ops likewise)")
    cols, passed = profile_fleet(names, Path(args.model[0]), runs=args.runs, warmup=args.warmup, percentile=args.percentile,
                                 any_format=args.any_format, threads=int(args.threads) if args.threads else None,
                                 say=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps({"devices": cols, "passed": passed}) if args.json else format_columns(cols) +
          f"\nfleet verdict: {'PASS: every device met every budget' if passed else 'FAIL: a device failed or missed a budget'}")
    return 0 if passed else 1


def add_profile_parser(sub) -> None:
    p = sub.add_parser("profile", help="push an exported model to a device, measure it there, and give the budget verdict")
    p.add_argument("model", nargs="+", help="MODEL.onnx or MODEL.tflite (its .ref.npz beside it is pushed too); several: "
                   "a comparison table, every (model, --threads) pair in one connection")
    p.add_argument("--device", required=True, help="a shipped profile name (local, rpi4, ...) or a YAML path; several "
                   "(a,b) or a fleet YAML: the model on each, a column per device")
    p.add_argument("--runs", type=positive_int, default=50)
    p.add_argument("--any-format", action="store_true", help="measure a model whose format is not the profile's runtime "
                   "(engine and precision); refused otherwise")
    p.add_argument("--warmup", type=nonneg_int, default=10)
    p.add_argument("--min-seconds", type=nonneg_float, default=0.0, help="keep timing until at least this long")
    p.add_argument("--threads", help="a count, or a list for a comparison (1,2,4); default: the profile's runtime.threads")
    p.add_argument("--cooldown", type=nonneg_float, default=0.0, help="seconds to wait between the runs of a comparison")
    p.add_argument("--csv", help="also write the comparison table here (CSV)")
    p.add_argument("--ops", action="store_true", help="per-operator times from the runtime's profiler, mapped to the stem, cells, "
                   "edges and ops of the genotype (ONNX; a second pass after the timed runs)")
    p.add_argument("--timeout", type=positive_float, help="give up on the device after this many seconds "
                   "(default: derived from --runs, the model's size and the latency budget)")
    p.add_argument("--affinity", help="CPU mask '0x3' or list '0,2-3'")
    p.add_argument("--percentile", default="p50", choices=["p50", "p90", "p99"],
                   help="latency percentile the budget is checked at (with --duration: in the last window, the sustained tail)")
    p.add_argument("--inputs", help="an .npz of real inputs, arrays named like the model's inputs (numpy.savez): timed and "
                   "checked on these instead of random inputs")
    p.add_argument("--reference", help="an .npz of the expected outputs, named like the model's outputs (or output_0, ...): "
                   "every output checked against it (default: the export's <model>.ref.npz, else no check)")
    p.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224", help="the shape of an input with dynamic "
                   "dimensions (repeatable)")
    p.add_argument("--batch", type=positive_int, help="the size of a dynamic first (batch) dimension (default 1)")
    p.add_argument("--int-range", type=int, nargs=2, metavar=("LO", "HI"), help="random integer inputs (token ids, indices) "
                   "are drawn from [LO, HI] (default 0 100)")
    p.add_argument("--duration", help="sustained load: run back to back this long (60, 30s, 10m) and report each window's "
                   "p50/p90/p99 with the CPU frequency and temperature (default: the profile's runtime.sustained_s, else off)")
    p.add_argument("--window", default="30s", help="with --duration: the window length (default 30s)")
    p.add_argument("--plot", help="with --duration: draw latency, frequency and temperature over time into this PNG")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profile)
