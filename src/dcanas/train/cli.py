"""``dcanas train`` and ``dcanas evaluate``: argument parsing only."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from ..argtypes import add_dist_options, add_folder_options, nonneg_float, nonneg_int, positive_float, positive_int
from ..presets import LR_SCHEDULES, TRAIN_PRESETS, describe


def cmd_train(args: argparse.Namespace) -> int:
    from ..argtypes import apply_dist_options
    from ..nets.genotype import load_genotype
    from ..data.datasets import get_spec
    from .trainer import TrainConfig, apply_preset, train

    apply_dist_options(args)

    cfg = apply_preset(TrainConfig(), args.preset)
    get_spec(args.dataset)
    loaded = load_genotype(args.genotype) if args.genotype else None
    dead = loaded.dead_edges() if loaded is not None else []
    if dead:  # the user's genotype: trained as given, with what it wastes said once
        print(f"note: {len(dead)} op(s) of this genotype cannot change its output ({', '.join(f'{k} {op} {i}->{j}' for k, op, i, j in dead)}): "
              "cut off from the cell's input or output, their parameters count and buy nothing; dcanas search derives none",
              file=sys.stderr)
    genotype = loaded.to_json() if loaded is not None else None
    fields = dict(genotype=genotype, arch=args.arch or ("dcanas" if genotype else None), width=args.width, dataset=args.dataset, data_root=args.data_root,
                  C=args.channels, layers=args.layers, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  lr_schedule=args.lr_schedule, subset=args.subset, seed=args.seed, device=args.device, drop_path=args.drop_path, cutout=args.cutout)
    cfg = replace(cfg, **{k: v for k, v in fields.items() if v is not None})
    if args.no_auxiliary:
        cfg = replace(cfg, auxiliary=False)
    result = train(cfg, args.out, resume=args.resume)
    if result["rank"] == 0:
        last = result["history"][-1] if result["history"] else {}
        print(f"{cfg.arch} on {cfg.dataset}: {result['params']:,} params, test top-1 {last.get('test_top1', float('nan')):.4f}, "
              f"top-5 {last.get('test_top5', float('nan')):.4f}, {sum(r['seconds'] for r in result['history']):.0f}s -> {args.out}/model.pt")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..data import datasets as D
    from ..nets.inference import keep_freed_memory
    from .model_io import load_model
    from .trainer import evaluate

    keep_freed_memory()
    model, meta = load_model(args.model)
    dataset = args.dataset or meta["dataset"]
    spec = D.get_spec(dataset)
    test = D.load_split(dataset, args.data_root, train=False)
    if args.subset:
        test = test.subset(slice(0, args.subset))
    ev = evaluate(model, test, spec)
    if args.json:
        print(json.dumps({k: ev[k] for k in ("top1", "top5", "loss", "n")}))
        return 0
    names = meta["classes"]
    conf = ev["confusion"]
    print(f"{args.model} on {dataset} test ({ev['n']} images): top-1 {ev['top1']:.4f}  top-5 {ev['top5']:.4f}  loss {ev['loss']:.4f}")
    print("per-class accuracy: " + ", ".join(f"{names[i]} {conf[i][i] / max(sum(conf[i]), 1):.3f}" for i in range(len(conf))))
    pairs = sorted(((conf[i][j], i, j) for i in range(len(conf)) for j in range(len(conf)) if i != j), reverse=True)[:3]
    print("most confused (true -> predicted): " + ", ".join(f"{names[i]} -> {names[j]} ({c})" for c, i, j in pairs))
    return 0


def add_train_parsers(sub) -> None:
    p = sub.add_parser("train", help="retrain a derived network (or a torchvision baseline) from scratch")
    p.add_argument("--genotype", help="genotype.json, an NB201 arch string or a known name (DARTS_V2)")
    p.add_argument("--arch", default=None, help="dcanas (default, needs --genotype), mobilenet_v2 or resnet18")
    p.add_argument("--width", type=positive_float, help="MobileNetV2 width multiplier (baselines)")
    p.add_argument("--dataset", default="fashion-mnist", help="a named dataset, or folder:PATH (an ImageFolder tree)")
    p.add_argument("--data-root")
    add_folder_options(p)
    p.add_argument("--channels", type=positive_int)
    p.add_argument("--layers", type=positive_int)
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int, help="global batch size (split across torchrun processes)")
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="cosine to 0 annealed every step (default) or once an epoch (DARTS' form; at few epochs the last trains at a high lr)")
    p.add_argument("--subset", type=positive_int, help="train on the first N training images")
    p.add_argument("--seed", type=nonneg_int)
    p.add_argument("--drop-path", type=nonneg_float)
    p.add_argument("--cutout", type=nonneg_int)
    p.add_argument("--no-auxiliary", action="store_true")
    p.add_argument("--device")
    p.add_argument("--preset", choices=list(TRAIN_PRESETS), help=describe(TRAIN_PRESETS))
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    add_dist_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="top-1/top-5 and confusion summary of a trained model.pt")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", help="default: the dataset the model was trained on")
    p.add_argument("--data-root")
    p.add_argument("--subset", type=positive_int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)
