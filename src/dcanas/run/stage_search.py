"""The search stage: K seeds under the budget through the LUG; a latency search is timed on the device before retraining."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..costs.metrics import metric_text
from ..files import write_json
from .pipeline import RunDir, hash_inputs
from .records import LatencyOutputs, SearchOutputs, Say


class SearchStage:
    """The search stage: its inputs hash and its body, mixed into ``run.stages.Stages``."""

    def _search_cfg(self, run: RunDir):
        """The search configuration with the run's latency model, checked against every budget."""
        from ..search.config import check_budget, cost_model

        lat = run.outputs("latency", LatencyOutputs)
        if lat.model is None:
            return self.search_cfg
        cfg = replace(self.search_cfg, latency_model=str(run.path(lat.model)))
        check_budget(cfg, cost_model(cfg))
        return cfg

    def search_inputs(self, run: RunDir) -> str:
        from ..search.lug import find_lug

        from ..search.config import identity

        cfg = self._search_cfg(run)  # the configuration the stage runs with (its latency model by content)
        lug = find_lug(cfg, Path(self.cfg.cache_dir) if self.cfg.cache_dir else None)
        return hash_inputs(identity(cfg), self.cfg.seeds, lug or "no-lug")

    def search(self, run: RunDir, say: Say) -> SearchOutputs:
        from ..search.lug import resolve_search_budget
        from ..search.searcher import run_search

        search_cfg = self._search_cfg(run)
        K_prime, lug = resolve_search_budget(search_cfg, Path(self.cfg.cache_dir) if self.cfg.cache_dir else None, say)
        d = run.stage_dir("search")
        results = []
        seeds = [(replace(search_cfg, seed=seed, search_budget=K_prime), d / f"seed-{seed}") for seed in range(self.cfg.seeds)]
        if self.cfg.seed_jobs > 1 or self.cfg.executor != "local":  # seeds side by side, each in its own process or Ray task
            from ..search.executor import Runner
            from ..search.lug import run_seed

            runner = Runner(jobs=self.cfg.seed_jobs, executor=self.cfg.executor, ray_address=self.cfg.ray_address)
            say(f"{self.cfg.seeds} seeds, {self.cfg.seed_jobs if self.cfg.executor == 'local' else 'as Ray tasks'} at a time, "
                f"K'={metric_text(search_cfg.metric, K_prime)}")
            calls = [(cfg.to_json(), None, str(seed_dir), runner.threads()) for cfg, seed_dir in seeds]  # K': the config's
            by_seed = {}
            for i, summary in runner.run(run_seed, calls):
                say(f"seed {i}: search-val acc {summary['val_acc']:.3f}, derived {metric_text(summary['metric'], summary['derived_cost'])}")
                by_seed[i] = summary
            summaries = [by_seed[i] for i in range(len(seeds))]
        else:
            summaries = []
            for cfg, seed_dir in seeds:
                say(f"seed {cfg.seed + 1}/{self.cfg.seeds}: K_d={metric_text(cfg.metric, cfg.budget)} {cfg.metric}, "
                    f"K'={metric_text(cfg.metric, K_prime)}")
                summaries.append(run_search(cfg, seed_dir, resume=(seed_dir / "checkpoint.pt").exists(), progress=say).summary)
        for (cfg, seed_dir), summary in zip(seeds, summaries):
            results.append(summary | {"seed": cfg.seed, "dir": str(seed_dir.relative_to(run.root))})
        best = max(results, key=lambda r: r["val_acc"])  # the paper keeps the best search-val accuracy of 5 runs
        checks: list[dict[str, Any]] = []
        if self._needs_latency():
            best, checks = self._hold_latency(run, search_cfg, best, say)
        write_json(d / "genotype.json", best["genotype"])
        out = SearchOutputs(genotype="search/genotype.json", search_log=f"{best['dir']}/search.json", best_seed=best["seed"],
                            K_d=best["K_d"], K_prime=K_prime, lug=lug, metric=best["metric"],
                            derived_params=best["derived_params"], derived_flops=best["derived_flops"],
                            val_acc=best["val_acc"], under_budget=best["under_budget"], eval_config=best["eval_config"],
                            seeds=[{k: r[k] for k in ("seed", "val_acc", "derived_cost", "dir")} for r in results],
                            device_checks=checks)
        say(f"best seed {best['seed']}: search-val acc {best['val_acc']:.3f}, derived {best['metric']} {metric_text(best['metric'], best['derived_cost'])}; "
            f"architecture weights: {best.get('learned', 'not recorded')}")
        return out

    def _hold_latency(self, run: RunDir, search_cfg, best: dict[str, Any], say: Say) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The derived network timed on the device before retraining; derived again under a tightened
        budget while it is over (``latency.hold``)."""
        from ..latency.hold import hold_latency
        from ..costs.latency import load_latency_model
        from ..nets.config import NetConfig
        from ..nets.cost import network_cost
        from ..nets.genotype import genotype_from_json
        from ..costs.metrics import metric_round
        from ..search.config import budgets, cost_model, replace_metric
        from ..search.searcher import rederive

        lm = load_latency_model(run.path(run.outputs("latency", LatencyOutputs).model))
        net = NetConfig.from_json(best["eval_config"])
        cm = cost_model(search_cfg)
        seed_cfg, seed_dir = replace(search_cfg, seed=best["seed"]), run.root / best["dir"]

        def tightened(K: float):  # the latency budget K, whether it is the search's metric or held beside it
            if search_cfg.metric == "latency_ms":
                return replace(seed_cfg, budget=K)
            return replace(seed_cfg, extra_budgets={**seed_cfg.extra_budgets, "latency_ms": K})

        g, checks = hold_latency(self.profile, budgets(search_cfg)["latency_ms"], genotype_from_json(best["genotype"]), net, lm,
                                 lambda K: rederive(tightened(K), seed_dir).genotype, replace_metric(cm, "latency_ms").feasible_range()[0],
                                 run.stage_dir("search") / "device-check", progress=say, store=self._store(run))
        if g.to_json() != best["genotype"]:
            cost = network_cost(g, net)
            derived = cm.derived(g)
            best = best | dict(genotype=g.to_json(), derived_params=cost.params, derived_flops=cost.flops,
                               derived_cost=metric_round(search_cfg.metric, derived), under_budget=derived <= search_cfg.budget)
        return best, checks
