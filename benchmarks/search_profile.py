"""Where a DCA-NAS search step's time goes, eager and fused, side by side in one process. Eager: the mixed
cells' eager forward and every gradient computed (the step before issue 17); fused: the fused mixed cells and
the lean step (``search_step(lean=True)``: the alpha pass computes no weight gradient).

One step = searcher.search_step (w step on search-train, alpha step on search-val with the constraint,
lambda). For each of the two forwards of mixed cells (``Supernet.set_fused``) on the same real
Fashion-MNIST batches, the same weights and the same machine:
  * the step's phases (the record_function labels in search_step: w.forward, w.backward, w.optimizer,
    alpha.forward, alpha.backward, alpha.cost, alpha.optimizer, lambda), from torch.profiler;
  * the time per cell: forward from module hooks; backward as the interval from the gradient hook of the
    cell's output to the next one of the same pass (the next cell down, or the stem's output): the cell, its
    input preprocessing and whatever autograd interleaves;
  * the time per kernel type (aten op self time, summed), from torch.profiler;
  * the achieved rate: fvcore's multiply-adds of the supernet's forward (the eager network, so the fused
    path is not credited for the extra zeros of its composed kernels) x 2 FLOP x 3 (forward + backward)
    x 2 passes, over the median step time (the lean step is credited with the nominal work it skips); beside
    a 2048x2048 fp32 GEMM measured now on the same threads.

    python benchmarks/search_profile.py [--steps 12] [--batch-size 32] [--channels 8] [--cells 5]
"""
from __future__ import annotations

import argparse
import collections
import copy
import statistics
import time

import torch
from search_cost import _macs, gemm_gflops  # the same counting and GEMM rate as the search-cost table

KERNELS = {  # aten op -> the kernel type it is reported under
    "aten::convolution_backward": "convolution (backward)", "aten::mkldnn_convolution": "convolution (forward)",
    "aten::native_batch_norm": "batch norm", "aten::native_batch_norm_backward": "batch norm",
    "aten::max_pool2d_with_indices": "pooling", "aten::max_pool2d_with_indices_backward": "pooling",
    "aten::avg_pool2d": "pooling", "aten::avg_pool2d_backward": "pooling",
    "aten::mm": "matmul", "aten::bmm": "matmul", "aten::addmm": "matmul",
    "aten::copy_": "copies and layout", "aten::cat": "copies and layout", "aten::stack": "copies and layout",
    "aten::clone": "copies and layout", "aten::contiguous": "copies and layout",
}
PHASES = ("w.forward", "w.backward", "w.optimizer", "alpha.forward", "alpha.backward", "alpha.cost", "alpha.optimizer", "lambda")


def supernet_macs(model: torch.nn.Module, x: torch.Tensor) -> float:
    """fvcore's multiply-adds of the eager network (the fused path is not credited for its kernels' extra zeros)."""
    return _macs(copy.deepcopy(model).set_fused(False), x)


class CellTimer:
    """Forward time per cell (module hooks) and backward time per cell: the interval from the gradient of the
    cell's output to the next gradient stamp of the same pass (the next cell down, or the stem's output)."""

    STEM = -1

    def __init__(self, model) -> None:
        self.fwd: dict[int, float] = collections.defaultdict(float)
        self.bwd: dict[int, float] = collections.defaultdict(float)
        self.stamps: list[tuple[int, float]] = []
        self.started: dict[int, float] = {}
        for i, cell in enumerate(model.cells):
            cell.register_forward_pre_hook(self._pre(i))
            cell.register_forward_hook(self._post(i))
        model.stem.register_forward_hook(self._stamp_grad(self.STEM))

    def _pre(self, i):
        def hook(module, args):
            self.started[i] = time.perf_counter()
        return hook

    def _post(self, i):
        stamp = self._stamp_grad(i)

        def hook(module, args, out):
            self.fwd[i] += time.perf_counter() - self.started[i]
            stamp(module, args, out)
        return hook

    def _stamp_grad(self, i):
        def hook(module, args, out):
            if out.requires_grad:
                out.register_hook(lambda g: self.stamps.append((i, time.perf_counter())))
        return hook

    def close_backward(self) -> None:
        """Attribute each interval between consecutive stamps to the cell that starts it; the stem's stamp
        ends a pass, so nothing between two passes (optimizer, the next forward) is counted."""
        stamps = sorted(self.stamps, key=lambda s: s[1])
        for (i, t), (_, t_next) in zip(stamps, stamps[1:]):
            if i != self.STEM:
                self.bwd[i] += t_next - t
        self.stamps.clear()


def measure(fused: bool, base, cms, cfg, batches, args) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from dcanas.search.searcher import autocast_for, optimizers, search_step

    model = copy.deepcopy(base).set_fused(fused)
    w_opt, _, a_opt = optimizers(model, cfg)
    autocast = autocast_for(cfg, torch.device("cpu"))
    lams = {m: 0.0 for m in cms}
    targets = {cfg.metric: cfg.budget}
    times = []
    for k, (t, v) in enumerate(batches):  # timed without the profiler or hooks
        t0 = time.perf_counter()
        lams, _ = search_step(model, cms, cfg, t, v, w_opt, a_opt, targets, lams, autocast, lean=fused)
        if k >= args.warmup:
            times.append(time.perf_counter() - t0)
    timer = CellTimer(model)
    profiled = batches[:args.profile_steps]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for t, v in profiled:
            lams, _ = search_step(model, cms, cfg, t, v, w_opt, a_opt, targets, lams, autocast, lean=fused)
            timer.close_backward()
    n = len(profiled)
    events = prof.key_averages()
    phases = {e.key: e.cpu_time_total / 1000 / n for e in events if e.key in PHASES}
    kernels: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.key.startswith("aten::"):
            kernels[KERNELS.get(e.key, "other aten ops")] += e.self_cpu_time_total / 1000 / n
    kinds = [f"{i} {model.cell_kind[i]} {'mixed' if model.runs_mixed(i) else 'derived'}" for i in range(len(model.cells))]
    cells = {kinds[i]: (1000 * timer.fwd[i] / n, 1000 * timer.bwd[i] / n) for i in range(len(model.cells))}
    return dict(ms=1000 * statistics.median(times), phases=phases, kernels=dict(kernels), cells=cells)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--cells", type=int, default=5)
    p.add_argument("--data-root", default="data")
    args = p.parse_args()

    from dcanas.data import datasets as D
    from dcanas.search.config import SearchConfig, cost_models, supernet_config
    from dcanas.search.supernet import SearchOptions, Supernet

    B = args.batch_size
    spec = D.get_spec("fashion-mnist")
    train = D.load_split("fashion-mnist", args.data_root, train=True)
    s_train, s_val = D.search_split(train, 2 * B * (args.steps + args.warmup), 0)
    batches = list(zip(D.batches(s_train, spec, B, shuffle=False, drop_last=True),
                       D.batches(s_val, spec, B, shuffle=False, drop_last=True)))
    cfg = SearchConfig(dataset="fashion-mnist", C=args.channels, cells=args.cells, nodes=4, batch_size=B, lr=0.025,
                       eval_C=16, eval_layers=8, budget=150_000.0, options=SearchOptions())
    torch.manual_seed(0)
    base = Supernet(supernet_config(cfg))
    cms = cost_models(cfg)
    rows = {name: measure(fused, base, cms, cfg, batches, args) for name, fused in (("eager", False), ("fused", True))}
    gemm = gemm_gflops()
    step_flop = supernet_macs(base, batches[0][0][0]) * 2 * 3 * 2
    e, f = rows["eager"], rows["fused"]
    print(f"supernet C={args.channels}, {args.cells} cells, batch {B} (28x28x1, real Fashion-MNIST), "
          f"{torch.get_num_threads()} threads; median of {args.steps} steps after {args.warmup} warm-up; "
          f"breakdowns: {args.profile_steps} profiled steps (profiler overhead included)")
    print(f"\nnominal work per step {step_flop / 1e9:.2f} GFLOP (fvcore multiply-adds x 2 x 3 x 2 passes); "
          f"2048x2048 fp32 GEMM here: {gemm:.0f} GFLOP/s")
    print("\n| step | ms/step | images/s | GFLOP/s | share of GEMM rate | speed-up |\n|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        rate = step_flop / (r["ms"] / 1000) / 1e9
        print(f"| {name} | {r['ms']:.0f} | {2 * B / (r['ms'] / 1000):.0f} | {rate:.1f} | {100 * rate / gemm:.1f}% | "
              f"{e['ms'] / r['ms']:.2f}x |")
    print("\n| phase | eager ms | fused ms |\n|---|---:|---:|")
    for ph in PHASES:
        print(f"| {ph} | {e['phases'].get(ph, 0):.1f} | {f['phases'].get(ph, 0):.1f} |")
    print("\n| cell | eager fwd ms | eager bwd ms | fused fwd ms | fused bwd ms |\n|---|---:|---:|---:|---:|")
    for c in e["cells"]:
        print(f"| {c} | {e['cells'][c][0]:.1f} | {e['cells'][c][1]:.1f} | {f['cells'][c][0]:.1f} | {f['cells'][c][1]:.1f} |")
    print("\n| kernel type (aten self time) | eager ms | fused ms |\n|---|---:|---:|")
    for k in sorted(e["kernels"], key=lambda k: -e["kernels"][k]):
        print(f"| {k} | {e['kernels'][k]:.1f} | {f['kernels'].get(k, 0):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
