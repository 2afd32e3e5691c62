"""``dcanas cost``: analytic params/FLOPs of an evaluation network beside fvcore's count."""
from __future__ import annotations

import argparse
import json
from typing import Optional

from ..argtypes import add_folder_options, positive_int


def _net_config(space: str, dataset: str, channels: Optional[int], layers: Optional[int]):
    from .config import default_config
    from ..data.datasets import get_spec

    spec = get_spec(dataset)
    return default_config(space, in_channels=spec.in_channels, input_size=spec.size,
                          num_classes=spec.num_classes, C=channels, layers=layers)


def cmd_cost(args: argparse.Namespace) -> int:
    from .build import build_network
    from .cost import fvcore_cost, network_cost
    from .genotype import load_genotype

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
    print(f"{genotype.space} network on {args.dataset}: C={cfg.C}, layers={cfg.layers}, "
          f"{cfg.input_size}x{cfg.input_size}x{cfg.in_channels}, {cfg.num_classes} classes")
    print(f"{'':16}{'analytic':>16}{'fvcore':>16}")
    print(f"{'params':16}{analytic.params:>16,}{fv.params:>16,}")
    print(f"{'FLOPs (MACs)':16}{analytic.flops:>16,}{fv.flops:>16,}")
    print(f"relative FLOPs difference: {row['flops_rel_diff']:.2e}")
    return 0


def add_cost_parser(sub) -> None:
    p = sub.add_parser("cost", help="analytic params/FLOPs of an evaluation network, cross-checked by fvcore")
    p.add_argument("--genotype", required=True, help="genotype.json, an NB201 arch string, or a known name (DARTS_V2, PC_DARTS, NASNet, ...)")
    p.add_argument("--dataset", default="cifar10", metavar="NAME",
                   help="fashion-mnist, mnist, cifar10, cifar100, imagenet16-120, tinyimagenet, imagenet (default cifar10)")
    add_folder_options(p)
    p.add_argument("--channels", type=positive_int, help="initial channels C (default: the paper's for the space)")
    p.add_argument("--layers", type=positive_int, help="DARTS cells, or NB201 cells per stage")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.set_defaults(func=cmd_cost)
