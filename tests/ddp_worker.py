"""Launched by test_train.py (under torchrun, or alone): trains with the library API, then saves
this process's final weights as rank<R>.pt so the test can compare ranks and runs."""
import sys
from dataclasses import replace
from pathlib import Path

import torch

from dcanas.nets.genotype import KNOWN
from dcanas.train.trainer import TrainConfig, apply_preset, train

out, data_root = Path(sys.argv[1]), sys.argv[2]
torch.set_num_threads(1)
cfg = replace(apply_preset(TrainConfig(genotype=KNOWN["DARTS_V2"], data_root=data_root), "tiny"),
              epochs=1, batch_size=32, drop_path=0.0, lr=0.01)
result = train(cfg, out, progress=lambda m: None)
torch.save({k: v.detach().clone() for k, v in result["model"].state_dict().items()}, out / f"rank{result['rank']}.pt")
