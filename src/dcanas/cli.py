"""``dcanas`` command line. Heavy imports (torch, fvcore, ...) stay inside the handlers so
``dcanas --help`` is instant; library code never sees an argparse namespace."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional

from .argtypes import positive_int
from .errors import UserError

Handler = Callable[[argparse.Namespace], int]


def _net_config(space: str, dataset: str, channels: Optional[int], layers: Optional[int]):
    from .nets.config import default_config
    from .datasets import get_spec

    spec = get_spec(dataset)
    return default_config(space, in_channels=spec.in_channels, input_size=spec.size,
                          num_classes=spec.num_classes, C=channels, layers=layers)


def cmd_cost(args: argparse.Namespace) -> int:
    from .nets.build import build_network
    from .nets.cost import fvcore_cost, network_cost
    from .nets.genotype import load_genotype

    genotype = load_genotype(args.genotype)
    cfg = _net_config(genotype.space, args.dataset, args.channels, args.layers)
    analytic = network_cost(genotype, cfg)
    fv = fvcore_cost(build_network(genotype, cfg), cfg.input_size, cfg.in_channels)
    row = {"space": genotype.space, "dataset": args.dataset, "channels": cfg.C, "layers": cfg.layers,
           "params": analytic.params, "flops": analytic.flops,
           "fvcore_params": fv.params, "fvcore_flops": fv.flops,
           "flops_rel_diff": abs(analytic.flops - fv.flops) / max(fv.flops, 1)}
    if args.json:
        print(json.dumps(row))
        return 0
    print(f"{genotype.space} network on {args.dataset}: C={cfg.C}, layers={cfg.layers}, {cfg.input_size}x{cfg.input_size}x{cfg.in_channels}, {cfg.num_classes} classes")
    print(f"{'':16}{'analytic':>16}{'fvcore':>16}")
    print(f"{'params':16}{analytic.params:>16,}{fv.params:>16,}")
    print(f"{'FLOPs (MACs)':16}{analytic.flops:>16,}{fv.flops:>16,}")
    print(f"relative FLOPs difference: {row['flops_rel_diff']:.2e}")
    return 0


def build_parser() -> argparse.ArgumentParser:

    parser = _Parser(prog="dcanas", description="Device Constraints-Aware NAS: device budget -> searched, trained, exported, profiled network.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("cost", help="analytic params/FLOPs of an evaluation network, cross-checked by fvcore")
    p.add_argument("--genotype", required=True, help="genotype.json, an NB201 arch string, or a known name (DARTS_V1, DARTS_V2, NB201_REF)")
    p.add_argument("--dataset", default="cifar10", metavar="NAME", help="fashion-mnist, mnist, cifar10, cifar100, imagenet16-120, tinyimagenet, imagenet (default cifar10)")
    p.add_argument("--channels", type=positive_int, help="initial channels C (default: the paper's for the space)")
    p.add_argument("--layers", type=positive_int, help="DARTS cells, or NB201 cells per stage")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.set_defaults(func=cmd_cost)

    from .search.cli import add_search_parser
    add_search_parser(sub)
    from .train.cli import add_train_parsers
    add_train_parsers(sub)
    from .export.cli import add_export_parser
    add_export_parser(sub)
    from .profile.cli import add_profile_parsers
    add_profile_parsers(sub)
    from .run_cli import add_run_parser
    add_run_parser(sub)
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2, as argparse)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"dcanas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dcanas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover - use `python -m dcanas`
    raise SystemExit(main())
