#!/usr/bin/env bash
# The search-vs-random benchmark (issue 34) at a larger scale on one CUDA GPU, as one command for a time-limited
# machine (about 9 minutes): full Fashion-MNIST (60,000 training images), the paper's supernet and search length
# (C=16, 8 cells, batch 512, 50 epochs, as many as fit the time box), 12 random networks. The searched arms: the shipped
# search, its label-blind control (the same search on shuffled training labels: a lead over random that it shares is not
# learned from the data, see docs/search-quality.md), the arg-max derivation and one variant.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_search_vs_random.sh        # needs data/fashion-mnist (make data)
#
# 1. the search-time forms (fused cells, op forms) are checked equal to the table's on CUDA in float64; if they are
#    not, the searches run the eager forms;
# 2. the paper-size search step is timed on CUDA, fused and eager (the search-cost benchmark's GPU row);
# 3. benchmarks/search_vs_random.py on CUDA, 14 jobs; whatever finished by the deadline is tabled;
# 4. benchmarks/supernet_rank.py on the searches it kept: do paper-length supernets rank the trained networks?
# Everything it prints and writes lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/dcanas-gpu}
PY=${PYTHON:-python3}
DEADLINE=${DEADLINE:-470}
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu SCALE='...' runs the same steps here, as a dry run at another scale
# the scale: the paper's supernet and search length on all 60,000 training images, the cpu-demo evaluation network
# (C=16, 8 cells) at 200k params, every network trained 8 epochs on 54,000 images (6,000 held out)
SCALE=${SCALE:---preset paper --budget 200000 --search eval_C=16 --search eval_layers=8 --search-subset 0 --search-seconds 200
  --seeds 3 --random 12 --rank-networks 8 --proxy-pool 100 --proxy-top 3 --train-subset 0 --train-epochs 8
  --train batch_size=256 --train lr=0.1 --jobs 14 --threads 1}
# one more searched arm: the same search with every cell mixed (no derived cells) after a third of warm-up (PC-DARTS)
VARIANT=${VARIANT:-'nd={"options": {"derived_cells": false}, "warmup_epochs": 15}'}
ARMS=${ARMS:-dcanas,shuffled,argmax}  # lambda0 makes room for the control: at CPU scale it never differed measurably from the shipped search
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
t0=$(date +%s)
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))" | tee "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv >> "$OUT/env.txt" 2>&1 || true

FORMS=()
MARK=$([ "$DEVICE" = cuda ] && echo gpu || echo "not gpu")  # the equality tests run on CUDA as their `gpu` parameter
if ! timeout 150 $PY -m pytest -q -x -p no:cacheprovider -m "$MARK" tests/test_search_speed.py \
        -k "fused_cell_equals or op_forms or fused_search_steps" > "$OUT/cuda_forms.log" 2>&1; then
    echo "the search-time forms differ from the table's on CUDA (cuda_forms.log): searching with the eager forms"
    FORMS=(--search fused=false)
fi
tail -n 2 "$OUT/cuda_forms.log"

for forms in "" --eager; do
    timeout 90 $PY benchmarks/paper_search_cost.py --device "$DEVICE" --steps ${STEPS:-10} --batch-size ${STEP_BATCH:-512} $forms 2>&1 | tail -n 3 | tee -a "$OUT/paper_step.txt"
done

elapsed=$(( $(date +%s) - t0 ))
echo "preflight took ${elapsed}s"
# shellcheck disable=SC2086  # SCALE is a list of words
timeout $(( DEADLINE + 120 )) $PY benchmarks/search_vs_random.py --device "$DEVICE" $SCALE --train cutout=0 --train drop_path=0.0 \
    --train auxiliary=false "${FORMS[@]}" --arms "$ARMS" --variant "$VARIANT" --deadline $(( DEADLINE - elapsed )) --work /tmp/svr-gpu --out "$OUT/search_vs_random.gpu.md" \
    2>&1 | tee "$OUT/search_vs_random.gpu.log"
timeout ${RANK_SECONDS:-90} $PY benchmarks/supernet_rank.py --work /tmp/svr-gpu --results "$OUT/search_vs_random.gpu.json" --device "$DEVICE" \
    2>&1 | tee "$OUT/supernet_rank.gpu.txt"
