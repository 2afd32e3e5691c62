"""``dcanas profile``: argument parsing and printing."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..argtypes import nonneg_float, nonneg_int, positive_float, positive_int
from ..errors import UserError


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
    result = profile_model(profile, model, runs=args.runs, warmup=args.warmup,
                           min_seconds=args.min_seconds, affinity=args.affinity, timeout_s=args.timeout, any_format=args.any_format,
                           threads=threads[0] if args.threads else None, ops=args.ops)
    if args.ops:
        from .ops import map_ops

        result["op_map"] = map_ops(Path(model), result.get("op_profile"))
    v = verdict(profile, Path(model), result, args.percentile)
    if args.json:
        print(json.dumps({**result, "verdict": v}))
    else:
        lat = result["latency_ms"]
        print(f"{result['model']} on {profile.name} ({result['engine']} {result['engine_version']}, {result['machine']}, "
              f"{result['cpu_model']}, {result['threads']} threads): latency p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f} ms "
              f"(mean {lat['mean']:.3f} ± {lat['std']:.3f}, {result['timed_runs']} runs), peak RSS {result['peak_rss_mb']:.1f} MB, "
              f"load {result['load_ms']:.1f} ms; output vs PyTorch reference: max abs diff "
              f"{result['reference_max_abs_diff'] if result['reference_max_abs_diff'] is not None else 'n/a'}")
        if result.get("note"):
            print(result["note"])
        for w in result.get("warnings", []):
            print(f"WARNING: {w}")
        print(format_table(v))
        if args.ops:
            from .ops import format_ops

            print(format_ops(result["op_map"]))
    return 0 if v["passed"] else 1


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
    p.add_argument("--percentile", default="p50", choices=["p50", "p90"], help="latency percentile the budget is checked at")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profile)
