"""``dcanas devices list|show|check``: argument parsing and printing."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict


def cmd_devices(args: argparse.Namespace) -> int:
    from .schema import list_profiles, load_profile

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
    from .session import check_device

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


def add_devices_parser(sub) -> None:
    p = sub.add_parser("devices", help="device profiles: list, show NAME, check NAME (connects)")
    p.add_argument("action", choices=["list", "show", "check"])
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)
