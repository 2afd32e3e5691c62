"""The ONE presets table (torch-free, so argparse ``choices`` and ``--help`` read it at start-up):
named overrides of the search, training and run configurations, each with a line of help."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional, TypeVar

from .errors import UserError

T = TypeVar("T")

SEARCH_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's supernet (Appendix D): 8 cells, C=16, 50 epochs, batch 512, lr 0.2 -- GPU work.
    "paper": dict(C=16, cells=8, epochs=50, batch_size=512, lr=0.2),
    # Sized for 2 CPU cores in a few minutes on Fashion-MNIST (a 3,000-image subset).
    "cpu-demo": dict(C=8, cells=5, epochs=5, batch_size=64, subset=3000, arch_lr=3e-3, lambda_lr=0.1,
                     eval_C=16, eval_layers=8),
    # The budget-precision benchmark's grid: many searches, so smaller than cpu-demo.
    "cpu-lug": dict(C=8, cells=5, epochs=4, batch_size=64, subset=2000, arch_lr=3e-3, lambda_lr=0.1,
                    eval_C=16, eval_layers=8),
    # Seconds: for tests.
    "tiny": dict(C=4, cells=3, nodes=2, epochs=2, batch_size=32, subset=256, arch_lr=3e-3, lambda_lr=0.5,
                 eval_C=8, eval_layers=3),
    # The longest CPU search measured (docs/search-quality.md): every cell mixed (derived cells off: the alpha gradient's per-step
    # signal-to-noise at the end of warm-up 0.20 against 0.13 with them), 5 warm-up epochs of w alone, 780 alpha steps
    # on 10,000 images; cpu-demo's supernet and evaluation network. ~37 min beside another search; its weights still
    # did not separate (median edge entropy 0.985 and 0.990 of uniform, lambda 0, seeds 0 and 1).
    "cpu-search": dict(C=8, cells=5, epochs=15, warmup_epochs=5, batch_size=64, subset=10000, arch_lr=3e-3, lambda_lr=0.1,
                       eval_C=16, eval_layers=8, options=dict(derived_cells=False)),
    # NB201 at a zero-cost pick (docs/search-quality.md, "The shipped rule again"): one epoch on 2,000 images (the alphas
    # are not read), then of 100 networks drawn uniformly from the budget's fill window, the 5th highest NASWOT score at
    # initialisation. The configuration benchmarks/search_vs_random.nb201-step8-zerocost2 measured against random
    # networks of a 200,000-params budget (eval network C=16, 2 cells a stage; trained with cpu-rank): 24 new searches
    # +0.80 points [+0.34, +1.26] against 24 new random networks, the comparison fixed in advance; all 40 against all 48,
    # +0.69 [+0.35, +1.03]. About 17 s a search alone (make demo); other budgets not measured.
    "nb201-zerocost": dict(space="nb201", C=8, cells=2, epochs=1, batch_size=64, subset=2000, warmup_epochs=0, arch_lr=0.03,
                           eval_C=16, eval_layers=2, options=dict(bottleneck=1), derive="naswot", proxy_draw="uniform",
                           proxy_rank=5, proxy_pool=100),
}

TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "paper-cifar": dict(epochs=600, batch_size=96, C=36, layers=20, lr=0.025),
    "paper-imagenet": dict(epochs=250, batch_size=1024, C=48, layers=14, lr=0.5, weight_decay=3e-5, label_smoothing=0.1),
    # 2 CPU cores, minutes: Fashion-MNIST, 4,000 training images, the first 2,000 test images, C=16, 8 cells
    # (measured here: one epoch over 10,000 images and the 10,000 test images took 223 s).
    "cpu-demo": dict(epochs=3, batch_size=96, C=16, layers=8, lr=0.05, subset=4000, test_subset=2000, cutout=8, drop_path=0.1),
    "tiny": dict(epochs=2, batch_size=32, C=4, layers=3, subset=256, test_subset=128, cutout=4, drop_path=0.1),
    # A recipe that ranks networks (benchmarks/search_vs_random.py): 3 epochs on 20,000 images (2,000 held out), no
    # cutout, drop path or auxiliary head, all 10,000 test images. On 2 networks x 2 seeds the seeds differed by 0.54 and
    # 0.59 points, against 0.20 .. 2.75 for cpu-demo's recipe at 5 epochs on 10,000 images. With the cosine annealed
    # every step (TrainConfig's lr_schedule default) 8 NB201 networks' seeds differed by 0.46 points on average
    # (0.79 once an epoch; benchmarks/search_vs_random.nb201-step8.last.md).
    "cpu-rank": dict(epochs=3, batch_size=96, C=16, layers=8, lr=0.05, subset=20000, cutout=0, drop_path=0.0, auxiliary=False),
}

# Where a training's cosine learning rate is annealed (TrainConfig.lr_schedule): every step, to 0 at the end (the
# default), or once an epoch (DARTS' form; at 3 epochs the last one trains at a quarter of the peak lr).
LR_SCHEDULES = ("step", "epoch")

# A search's derivation rules (SearchConfig.derive; search/searcher.py's derivations): fill (the default), budget, the
# paper's argmax, and naswot (the fill window's networks ranked by a zero-cost proxy: search/proxy.py).
DERIVE_RULES = ("fill", "budget", "argmax", "naswot")
# Where the naswot derivation draws its pool from (SearchConfig.proxy_draw): the final alphas' op distribution with the
# fill pick first (the default), or uniformly over the window, the alphas ignored (with proxy_rank 5: +0.80 points
# against random networks in the benchmark's code, +0.54 [-0.04, +1.12] through the search; docs/search-quality.md).
PROXY_DRAWS = ("alphas", "uniform")

# `dcanas run --preset` -> (search preset, training preset)
RUN_PRESETS: dict[str, tuple[str, str]] = {"cpu-demo": ("cpu-demo", "cpu-demo"), "tiny": ("tiny", "tiny"),
                                           "cpu-search": ("cpu-search", "cpu-rank"), "paper": ("paper", "paper-cifar"),
                                           "nb201-zerocost": ("nb201-zerocost", "cpu-rank")}

# What a run preset's search is worth, said in the run's output (benchmarks/search_vs_random.py measured it).
RUN_NOTES = {
    "cpu-demo": "cpu-demo's search is a smoke run: its ~115 alpha steps leave the architecture weights at uniform "
                "(median edge entropy 0.99 of uniform), so the network is chosen by the budget and the fill rule; its networks "
                "matched random networks of the same budget, not beat them (+0.02 points, 95% interval -1.13..+1.16; "
                "benchmarks/search_vs_random.last.md). No CPU preset's alphas learn (cpu-search, ~37 min, ended at 0.985); the preset "
                "whose pick beat random networks of a 200,000-params budget is nb201-zerocost (a zero-cost proxy, not the alphas).",
    "nb201-zerocost": "nb201-zerocost picks the network by a zero-cost proxy, not by the search's alphas (one short epoch, "
                      "not read): the 5th highest NASWOT score of 100 networks drawn from the budget's window. At a "
                      "200,000-params budget its networks beat random networks of the budget by +0.80 points (95% interval "
                      "+0.34..+1.26; 24 searches against 24 random networks, docs/search-quality.md); other budgets not measured.",
    "tiny": "tiny's search is a smoke run for tests: its network is chosen by the budget, not learned.",
}

HELP = {
    "paper": "the paper's sizes (Appendix D; GPU work)",
    "paper-cifar": "DARTS' CIFAR retraining: 600 epochs, C=36, 20 cells (GPU work)",
    "paper-imagenet": "DARTS' ImageNet retraining: 250 epochs, C=48, 14 cells (GPU work)",
    "cpu-demo": "minutes on 2 CPU cores (Fashion-MNIST subsets)",
    "cpu-lug": "the budget-precision benchmark's searches (smaller than cpu-demo)",
    "tiny": "seconds (tests)",
    "cpu-search": "every cell mixed, warm-up, 15 epochs on 10,000 images (~37 min beside another search; still did not separate)",
    "cpu-rank": "3 epochs on 20,000 images, no cutout, drop path or auxiliary head (a recipe that ranks networks)",
    "nb201-zerocost": "NB201, the 5th highest NASWOT score of 100 networks of the budget after one short epoch (~17 s; "
                      "beat random networks of a 200,000-params budget: docs/search-quality.md)",
}


def describe(table: dict[str, Any]) -> str:
    """``--help`` text listing a table's presets."""
    return "; ".join(f"{name}: {HELP[name]}" for name in table)


def apply_preset(cfg: T, table: dict[str, dict[str, Any]], name: Optional[str], kind: str) -> T:
    """``cfg`` with the overrides of preset ``name`` (unchanged for None); an unknown name is a UserError."""
    if not name:
        return cfg
    if name not in table:
        raise UserError(f"unknown {kind} preset {name!r}; valid: {', '.join(table)}")
    return replace(cfg, **table[name])
