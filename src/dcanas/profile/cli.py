"""``dcanas devices list|show|check`` and ``dcanas profile``: argument parsing and printing."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from ..argtypes import nonneg_float, nonneg_int, positive_float, positive_int


def cmd_devices(args: argparse.Namespace) -> int:
    from ..devices.schema import list_profiles, load_profile

    if args.action == "list":
        for name in list_profiles():
            p = load_profile(name)
            budget = ", ".join(f"{k}={v:,}" for k, v in p.budget.items())
            print(f"{name:16} {p.connection.transport:6} {p.runtime.engine}/{p.runtime.precision:5} {budget}")
        return 0
    if not args.name:
        from ..errors import UserError
        raise UserError(f"`dcanas devices {args.action}` needs a device name or YAML path; shipped: {', '.join(list_profiles())}")
    profile = load_profile(args.name)
    if args.action == "show":
        print(json.dumps(asdict(profile), indent=2))
        return 0
    from .remote import check_device

    info = check_device(profile)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{profile.name} via {info['transport']}: Python {info['python']} on {info['machine']} ({info['system']}), "
          f"CPU {info['cpu_model']}, {info['cores']} cores, {info['memory_mb']} MB memory, {info['free_disk_mb']} MB free disk")
    wanted = {"onnxruntime": ["onnxruntime"], "tflite": ["ai_edge_litert", "tflite_runtime", "tensorflow"]}[profile.runtime.engine]
    print("runtimes: " + (", ".join(f"{k} {v}" for k, v in info["runtimes"].items()) or "none"))
    if not any(w in info["runtimes"] for w in wanted):
        print(f"MISSING: the profile's engine {profile.runtime.engine} needs one of {', '.join(wanted)} on the device")
        return 1
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from ..devices.schema import load_profile
    from .remote import profile_model
    from .verdict import format_table, verdict

    profile = load_profile(args.device)
    result = profile_model(profile, args.model, runs=args.runs, warmup=args.warmup, threads=args.threads,
                           min_seconds=args.min_seconds, affinity=args.affinity, timeout_s=args.timeout)
    v = verdict(profile, Path(args.model), result, args.percentile)
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
        print(format_table(v))
    return 0 if v["passed"] else 1


def add_profile_parsers(sub) -> None:
    p = sub.add_parser("devices", help="device profiles: list, show NAME, check NAME (connects)")
    p.add_argument("action", choices=["list", "show", "check"])
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("profile", help="push an exported model to a device, measure it there, and give the budget verdict")
    p.add_argument("model", help="MODEL.onnx or MODEL.tflite (its .ref.npz beside it is pushed too)")
    p.add_argument("--device", required=True, help="a shipped profile name (local, rpi4, ...) or a YAML path")
    p.add_argument("--runs", type=positive_int, default=50)
    p.add_argument("--warmup", type=nonneg_int, default=10)
    p.add_argument("--min-seconds", type=nonneg_float, default=0.0, help="keep timing until at least this long")
    p.add_argument("--threads", type=positive_int, help="default: the profile's runtime.threads")
    p.add_argument("--timeout", type=positive_float, help="give up on the device after this many seconds "
                   "(default: derived from --runs, the model's size and the latency budget)")
    p.add_argument("--affinity", help="CPU mask '0x3' or list '0,2-3'")
    p.add_argument("--percentile", default="p50", choices=["p50", "p90"], help="latency percentile the budget is checked at")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profile)
