"""``dcanas run``: device profile -> search -> retrain -> export -> profile on the device -> verdict -> report."""
from __future__ import annotations

import argparse
import sys

from ..argtypes import add_folder_options, nonneg_int, positive_int
from ..costs.metrics import metric_text
from ..presets import RUN_NOTES, RUN_PRESETS
from datetime import date
from pathlib import Path


def cmd_run(args: argparse.Namespace) -> int:
    from ..data.datasets import short_name
    from ..devices.schema import load_profile
    from ..errors import UserError
    from .pipeline import RunDir, StageFailed, run_pipeline
    from .records import ProfileOutputs, ReportOutputs, RunConfig, SearchOutputs, TrainOutputs, VerdictOutputs
    from .stages import Stages, connection_check

    from ..devices.fleet import parse_devices

    names = parse_devices(args.device)
    cfg = RunConfig(device=args.device, dataset=args.dataset, data_root=args.data_root, metric=args.metric, seeds=args.seeds,
                    preset=args.preset, formats=args.formats.split(",") if args.formats else None, space=args.space,
                    baselines=args.baselines.split(",") if args.baselines else [], runs=args.runs, warmup=args.warmup,
                    cache_dir=args.cache_dir, latency_calibrate=args.latency_calibrate, seed_jobs=args.seed_jobs,
                    executor=args.executor, ray_address=args.ray_address, hold_latency=args.hold_latency,
                    search_overrides={k: v for k, v in dict(epochs=args.search_epochs, subset=args.search_subset,
                                                            eval_C=args.eval_channels, eval_layers=args.eval_layers).items() if v},
                    train_overrides={k: v for k, v in dict(epochs=args.train_epochs, subset=args.train_subset).items() if v})
    if args.formats:
        from ..export.formats import resolve_formats
        resolve_formats(args.formats)
    from ..search.executor import check_executor

    check_executor(args.executor, args.ray_address)
    if names != [args.device]:
        return cmd_run_fleet(args, names, cfg)
    profile = load_profile(args.device)
    stages = Stages(cfg, profile)
    for note in stages.notes + ([RUN_NOTES[args.preset]] if args.preset in RUN_NOTES else []):
        print(note, file=sys.stderr)
    if args.from_stage in (None, "search") and profile.connection.transport != "local":
        print(f"checking the connection to {profile.name} before the search ...", file=sys.stderr)
        connection_check(profile)  # seconds, not after an hour of search
    out = Path(args.out or f"runs/{date.today().isoformat()}-{profile.name}-{short_name(args.dataset)}")
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        with run_lock(out):
            run = RunDir(out, cfg.to_json())  # the state read under the lock: another writer's is never half-read
            run_pipeline(run, stages.specs(), resume=args.resume, from_stage=args.from_stage, progress=say)
    except StageFailed as exc:
        print(f"dcanas run: {exc}", file=sys.stderr)
        return 2 if isinstance(exc.cause, UserError) else 1
    v, s = run.outputs("verdict", VerdictOutputs), run.outputs("search", SearchOutputs)
    t, p = run.outputs("train", TrainOutputs), run.outputs("profile", ProfileOutputs)
    print(f"{profile.name}: {s.metric} budget {metric_text(s.metric, s.K_d)} -> derived network {s.derived_params:,} params, "
          f"{s.derived_flops:,} MACs; test top-1 {100 * t.test_top1:.2f}%; {p.engine} p50 {p.latency_ms['p50']:.3f} ms, "
          f"peak RSS {p.peak_rss_mb:.1f} MB; verdict: {'PASS' if v.passed else 'FAIL'}")
    print(f"report: {run.path(run.outputs('report', ReportOutputs).html)}")
    if args.preset in RUN_NOTES:
        print(RUN_NOTES[args.preset])
    return 0 if v.passed else 1


def run_lock(out: Path):
    """One writer per run folder: a second ``dcanas run`` on it (with --resume or not) exits 2 naming the pid."""
    from ..files import exclusive_lock

    return exclusive_lock(out / ".lock", f"{out} is in use by another dcanas run",
                          "wait for it to end (--resume then continues from what it finished) or choose another --out")


def cmd_run_fleet(args: argparse.Namespace, names: list[str], cfg) -> int:
    """``dcanas run --device a,b,c`` (or a fleet YAML): see :mod:`dcanas.run.fleet`."""
    from dataclasses import replace

    from ..data.datasets import short_name
    from ..errors import UserError
    from .fleet import fleet_members, run_fleet, write_fleet_report
    from .stages import Stages

    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    members = fleet_members(names, lambda p: Stages(replace(cfg, device=p.source), p))
    for m in members:
        for note in m.stages.notes:
            say(f"[{m.profile.name}] {note}")
    out = Path(args.out or f"runs/{date.today().isoformat()}-fleet-{short_name(args.dataset)}")
    with run_lock(out):
        if (out / "fleet.json").exists() and not args.resume and args.from_stage is None:
            raise UserError(f"{out} already holds a fleet run; pass --resume to continue it, --from STAGE to redo from a stage, "
                            f"or choose another --out")
        groups = len({m.key for m in members})
        say(f"fleet of {len(members)} devices, {groups} distinct search{'es' if groups > 1 else ''}: "
            + ", ".join(f"{m.profile.name} (search {m.key})" for m in members))
        run_fleet(members, out, config=cfg.to_json(), resume=args.resume, from_stage=args.from_stage, say=say)
    paths = write_fleet_report(members, out, f"dcanas fleet run: {', '.join(m.profile.name for m in members)}")
    for m in members:
        print(f"{m.profile.name}: {m.status}" + (f" ({m.error})" if m.error else ""))
    print(f"fleet verdict: {'PASS' if paths['passed'] else 'FAIL'}; report: {paths['html']}")
    return 0 if paths["passed"] else 1


def add_run_parser(sub) -> None:
    from .records import STAGES

    p = sub.add_parser("run", help="the whole pipeline: device profile -> searched, trained, exported, profiled network + verdict")
    p.add_argument("--device", required=True, help="a shipped profile (local, rpi4, pixel3-termux, rpi4-emulated) or a YAML path; "
                   "several (rpi4,pixel3-termux) or a fleet YAML (devices: [...]) run as a fleet: one search per distinct "
                   "search configuration, a column per device, exit 0 only when every device passed")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-root")
    add_folder_options(p)
    p.add_argument("--space", choices=["darts", "nb201"], help="darts or nb201 (default: the preset's, else darts)")
    p.add_argument("--metric", type=lambda m: "latency_ms" if m == "latency" else m,
                   help="params, flops or latency (default: the profile's search_metric, else params, else flops)")
    p.add_argument("--seeds", type=positive_int, default=1, help="searches with different seeds; the best search-val accuracy wins (paper: 5)")
    p.add_argument("--seed-jobs", type=positive_int, default=1, help="seeds searched at a time, each in its own process "
                   "(default 1: one after another, in this process)")
    p.add_argument("--executor", default="local", choices=["local", "ray"], help="where parallel seeds run (ray: Ray tasks)")
    p.add_argument("--ray-address", help="an existing Ray cluster for --executor ray (default: a local Ray instance)")
    p.add_argument("--preset", default="cpu-demo", choices=list(RUN_PRESETS),
                   help="; ".join(f"{k}: search {s!r} + training {t!r}" for k, (s, t) in RUN_PRESETS.items()))
    p.add_argument("--formats", help="export formats (default: the profile's engine/precision, plus onnx)")
    p.add_argument("--baselines", help="also train these for the accuracy/params plot: mobilenet_v2, resnet18, or a published cell "
                   "(DARTS_V1, DARTS_V2, PC_DARTS, NASNet, AmoebaNet) in the searched network's channels and cells")
    p.add_argument("--runs", type=positive_int, default=50, help="timed runs on the device")
    p.add_argument("--warmup", type=nonneg_int, default=10)
    p.add_argument("--search-epochs", type=positive_int)
    p.add_argument("--search-subset", type=positive_int)
    p.add_argument("--train-epochs", type=positive_int)
    p.add_argument("--train-subset", type=positive_int)
    p.add_argument("--eval-channels", type=positive_int, help="channels C of the evaluation network the budget refers to "
                   "(default: the preset's, widened or narrowed to fit the device budget)")
    p.add_argument("--eval-layers", type=positive_int, help="cells of the evaluation network the budget refers to")
    p.add_argument("--cache-dir", help="LUG and latency-model cache (default ~/.cache/dcanas/lug and ~/.cache/dcanas/latency)")
    p.add_argument("--hold-latency", action="store_true",
                   help="also hold the profile's latency_ms budget in the search, beside its metric (each budget with its own "
                        "lambda): the device's latency model is measured first (or reused: dcanas latency build)")
    p.add_argument("--latency-calibrate", type=nonneg_int, default=20,
                   help="networks measured end to end to calibrate the latency model (a latency-searched run builds one)")
    p.add_argument("--out", help="run directory (default runs/<date>-<device>-<dataset>; a fleet: runs/<date>-fleet-<dataset>)")
    p.add_argument("--from", dest="from_stage", choices=STAGES, help="redo from this stage on")
    p.add_argument("--resume", action="store_true", help="skip stages whose inputs are unchanged")
    p.set_defaults(func=cmd_run)
