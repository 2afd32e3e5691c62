"""Launched by test_search_cli.py (under torchrun with 2 gloo processes, or alone): a tiny search through the
library API, then this process's final alphas and genotype saved as rank<R>.pt so the test can compare ranks
and runs."""
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

from dcanas.search.config import SearchConfig, apply_preset
from dcanas.search.searcher import run_search

out, data_root = Path(sys.argv[1]), sys.argv[2]
torch.set_num_threads(1)
cfg = replace(apply_preset(SearchConfig(dataset="fashion-mnist", data_root=data_root), "tiny"), epochs=2, batch_size=32,
              budget=15_000.0)
resume = len(sys.argv) > 3 and sys.argv[3] == "--resume"  # DCANAS_EXIT_AFTER_STEPS in the environment crashes a run
res = run_search(cfg, out, 15_000.0, resume=resume, progress=lambda m: None)
rank = int(os.environ.get("RANK", "0"))
out.mkdir(parents=True, exist_ok=True)
torch.save(dict(alphas=res.alphas, genotype=res.genotype.to_json(), val_acc=res.summary["val_acc"]), out / f"rank{rank}.pt")
