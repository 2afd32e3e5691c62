"""LUG build wall time for the same 4 points (issue 19), side by side in one run: the local process pool with 1
and 2 jobs, and Ray tasks on a two-node Ray cluster on loopback (a head and a second node, one CPU each).
On this 2-core machine the point is overhead, not speed-up: Ray's cost per search task (start, scheduling,
result transfer) against a tiny search's own time, which each search records.

    python benchmarks/executor.py [--preset tiny] [--epochs 4] [--data-root data]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    from dcanas.search.config import SearchConfig, apply_preset
    from dcanas.search.lug import Runner, build_lug

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--data-root", default="data")
    args = p.parse_args()
    cfg = replace(apply_preset(SearchConfig(dataset="fashion-mnist", data_root=str(Path(args.data_root) / "fashion-mnist")),
                               args.preset), epochs=args.epochs)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        def build(name: str, runner: Runner) -> None:
            t0 = time.perf_counter()
            lug, _ = build_lug(cfg, points=4, max_points=4, runner=runner, cache_dir=Path(d) / name, progress=lambda m: None)
            wall = time.perf_counter() - t0
            search_s = [json.loads((Path(pt["run_dir"]) / "search.json").read_text())["summary"]["seconds"] for pt in lug.points]
            rows.append(dict(name=name, wall=wall, search_s=sum(search_s), points=[pt["K_d"] for pt in lug.points]))
            print(f"  {name}: {wall:.1f} s", file=sys.stderr, flush=True)

        build("local, 1 job", Runner(jobs=1))
        build("local, 2 jobs", Runner(jobs=2))
        import ray
        from ray.cluster_utils import Cluster

        t0 = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1))
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        cluster.wait_for_nodes()
        start_s = time.perf_counter() - t0
        try:
            build("Ray, 2 single-CPU nodes", Runner(executor="ray"))
        finally:
            ray.shutdown()
            cluster.shutdown()
    base = rows[0]["wall"]
    print(f"LUG build, 4 points, {args.preset} preset with {args.epochs} search epochs, real Fashion-MNIST, this machine "
          f"(2 cores); Ray cluster start (not in the build's time): {start_s:.1f} s")
    print("| executor | wall (s) | vs 1 job | searches' own time (s) | overhead per search (s) | overhead share |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        par = 1 if r["name"] == "local, 1 job" else 2
        overhead = (r["wall"] - r["search_s"] / par) / 4 * par  # wall beyond the searches' own time, per search
        print(f"| {r['name']} | {r['wall']:.1f} | {base / r['wall']:.2f}x | {r['search_s']:.1f} | {overhead:.2f} | "
              f"{100 * overhead / (r['search_s'] / 4):.0f}% |")
    pool, on_ray = rows[1], rows[2]
    per_search = pool["wall"] / 2  # two searches at a time: a search's wall in the pool, start-up and data included
    extra = (on_ray["wall"] - pool["wall"]) / 2
    print(f"Ray against the local pool (both 2 at a time): {extra:+.2f} s per search, {100 * extra / per_search:+.0f}% of a search's "
          f"{per_search:.1f} s in the pool")
    for r in rows:
        print(f"K_d curve, {r['name']}: {r['points']}")
    print(f"Ray's curve equals the local pool's at the same torch threads per search (1): "
          f"{'yes' if on_ray['points'] == pool['points'] else 'NO'}; the 1-job pool gives each search 2 threads, "
          f"whose different summation order may move a derived network")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
