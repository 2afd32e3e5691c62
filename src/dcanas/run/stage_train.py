"""The train stage: the derived network (and any baselines) retrained from scratch."""
from __future__ import annotations

import json
from dataclasses import replace

from .pipeline import RunDir, hash_inputs
from .records import BASELINE_GENOTYPES, SearchOutputs, TrainOutputs, Say


class TrainStage:
    """The train stage: its inputs hash and its body, mixed into ``run.stages.Stages``."""

    def _train_cfg(self, run: RunDir):
        from ..train.trainer import TrainConfig, apply_preset

        s = run.outputs("search", SearchOutputs)
        genotype = json.loads(run.path(s.genotype).read_text())
        # The network the budget was searched for: the search's evaluation config.
        return replace(apply_preset(TrainConfig(), self.train_preset), genotype=genotype, dataset=self.cfg.dataset,
                       data_root=self.cfg.data_root, C=s.eval_config["C"], layers=s.eval_config["layers"],
                       **self.cfg.train_overrides)

    def train_inputs(self, run: RunDir) -> str:
        g = run.path(run.outputs("search", SearchOutputs).genotype)
        from ..data.datasets import dataset_identity

        return hash_inputs(g, self.train_preset, self.cfg.train_overrides, self.cfg.baselines, dataset_identity(self.cfg.dataset))

    def train(self, run: RunDir, say: Say) -> TrainOutputs:
        from ..train.trainer import train

        d = run.stage_dir("train")
        cfg = self._train_cfg(run)
        res = train(cfg, d / "searched", resume=(d / "searched" / "checkpoint.pt").exists(), progress=say)
        last = res["history"][-1]
        baselines = []
        for arch in self.cfg.baselines:
            if arch in BASELINE_GENOTYPES:  # a published cell (NASNet, AmoebaNet, DARTS_V2) in the searched network's shape
                from ..nets.genotype import KNOWN

                b = replace(cfg, genotype=KNOWN[arch])
            else:
                b = replace(cfg, arch=arch, genotype=None, width=0.35 if arch == "mobilenet_v2" else 1.0)
            say(f"baseline {arch}")
            r = train(b, d / arch, resume=(d / arch / "checkpoint.pt").exists(), progress=say)
            baselines.append(dict(arch=arch, params=r["params"], test_top1=r["history"][-1]["test_top1"]))
        return TrainOutputs(model="train/searched/model.pt", train_log="train/searched/train.json", params=res["params"],
                            test_top1=last["test_top1"], test_top5=last["test_top5"],
                            seconds=sum(r["seconds"] for r in res["history"]), baselines=baselines)
