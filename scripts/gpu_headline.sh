#!/bin/bash
# Train issue 16's headline rows (benchmarks/accuracy.py --part headline) on a GPU machine in
# one command: the VGG-style CNNs that compile for ecp5-85f (and, with ROWS=all, the MLP
# recipe again), several trainings at once on one GPU, then deploy == golden == CPU kernel
# on the test set.
#
# Here, once (data/ is git-ignored; the four IDX files are ~30 MB):
#   mkdir -p data && cp -r /usr/share/datasets/fashion-mnist data/
# On the GPU machine (a python3 with torch, numpy, numba; nothing is downloaded):
#   bash scripts/gpu_headline.sh OUT_DIR [extra benchmarks/accuracy.py flags]
#
# BUDGET_S=N (seconds of wall time for the whole script) makes it time one row's training
# steps on this GPU first (--estimate-steps) and train every row for as many epochs as fit
# (at most the recipe's 100; PAR_SLOWDOWN, default 2.0, is the assumed cost of sharing the
# GPU among the parallel rows). The epochs used are recorded in every result row.
#
# OUT_DIR receives accuracy.headline*.json/.md, teacher.npy.json and the estimate, written as
# each row finishes (so a run cut short keeps what finished), and models.tgz (the checkpoints,
# models/<row>/) at the end. Measured on one H200 (benchmarks/results/accuracy.headline.vgg.md):
# 7 s per epoch for one row alone, 4 rows x 18 epochs in parallel in 297 s (~11 s per epoch
# each) plus the teacher's 18 s.
set -euo pipefail
out=${1:?usage: gpu_headline.sh OUT_DIR [accuracy.py flags]}
shift
t0=$(date +%s)
cd "$(dirname "$0")/.."
data=data/fashion-mnist
[ -d "$data" ] || data=/usr/share/datasets/fashion-mnist
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
nvidia-smi -L || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
export PYTHONUNBUFFERED=1
mkdir -p "$out"
rows=()
[ "${ROWS:-cnn}" = all ] || rows=(--only vgg)
epochs=()
if [ -n "${BUDGET_S:-}" ]; then
    python3 benchmarks/accuracy.py --part headline --device "${DEVICE:-cuda}" --only vgg6-s0 \
        --estimate-steps "${EST_STEPS:-40}" --data-path "$data" --out "$out/estimate"
    n=$(python3 - "$out/estimate/accuracy.headline.estimate.json" "$BUDGET_S" "$t0" <<'PY'
import json, sys, time
doc = json.load(open(sys.argv[1]))
s_epoch = max(r["s_per_epoch_wall"] for r in doc["estimates"])
left = float(sys.argv[2]) - (time.time() - float(sys.argv[3]))
# the teacher (12 float epochs), worker start-up, the final evaluations (deploy, CPU kernel,
# golden on GOLDEN_LIMIT images)
left -= 180
import os
slow = float(os.environ.get("PAR_SLOWDOWN", "2.0"))
print(max(5, min(100, int(left / (s_epoch * slow)))))
PY
)
    echo "budget ${BUDGET_S} s: ${n} epochs per row"
    epochs=(--epochs "$n")
fi
python3 benchmarks/accuracy.py --part headline --device "${DEVICE:-cuda}" --parallel "${PARALLEL:-4}" \
    --threads "${THREADS:-3}" --golden-limit "${GOLDEN_LIMIT:-300}" --data-path "$data" \
    --out "$out" "${rows[@]}" "${epochs[@]}" "$@" || status=$?
# the device tool returns files at most a few folders deep: one archive of the checkpoints
[ -d "$out/models" ] && tar czf "$out/models.tgz" -C "$out" models && rm -rf "$out/models"
exit "${status:-0}"
