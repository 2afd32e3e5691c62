#!/usr/bin/env bash
# Issue 32's GPU part as one command for a time-limited CUDA machine (about 8 minutes on one H100):
#   1. the `gpu` tests: the float64 equality tests of the search-time forms on CUDA, a short search in float32
#      and bf16, bf16's alphas against float32's, retraining and evaluation on CUDA;
#   2. the paper-size search step (C=16, 8 cells, batch 512, 32x32x3) on CUDA: eager, fused, fused + torch.compile,
#      fused + bf16 autocast, each with its 50-epoch extrapolation in GPU-hours beside the paper's 1.37;
#   3. a cpu-demo-sized search in float32 and under bf16 autocast on the same seed: the op-probability gaps, the
#      genotypes and the times (benchmarks/amp_alphas.py).
#
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh        # needs data/fashion-mnist (make data) and a CUDA torch
#
# Every step has its own time limit; a step that fails or runs out says so and the next one runs. Everything it
# prints lands in $OUT/gpu_check.md (and one log per step).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/dcanas-gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
REPORT="$OUT/gpu_check.md"
: > "$REPORT"
say() { echo "$@" | tee -a "$REPORT"; }
step() {  # step NAME LIMIT_S COMMAND...: run it under a time limit, keep its log, put its last lines in the report
    local name=$1 limit=$2; shift 2
    local t0; t0=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    say ""
    say "## $name (exit $rc$([ $rc -eq 124 ] && echo ", stopped at its ${limit} s limit"), $(( $(date +%s) - t0 )) s)"
    grep -v '^  step ' "$OUT/$name.log" | tail -n 25 | tee -a "$REPORT"
}

say "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ)"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1 | tee -a "$REPORT"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$REPORT"

step gpu-tests 240 $PY -m pytest -q -rs -p no:cacheprovider -m gpu tests/
step paper-step-eager 150 $PY benchmarks/paper_search_cost.py --device cuda --steps 20 --warmup 3 --eager
step paper-step-fused 150 $PY benchmarks/paper_search_cost.py --device cuda --steps 20 --warmup 3
step paper-step-compiled 200 $PY benchmarks/paper_search_cost.py --device cuda --steps 20 --warmup 3 --compile
step paper-step-bf16 150 $PY benchmarks/paper_search_cost.py --device cuda --steps 20 --warmup 3 --amp
step amp-alphas 150 $PY benchmarks/amp_alphas.py --device cuda --preset cpu-demo --budget 200000
say ""
say "done in $SECONDS s; logs in $OUT"
