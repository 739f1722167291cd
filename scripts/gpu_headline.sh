#!/bin/bash
# Train issue 16's headline rows (benchmarks/accuracy.py --part headline) on a GPU machine in
# one command: the Fashion-MNIST MLP recipe and the VGG-style CNNs that compile for ecp5-85f,
# several trainings at once on one GPU, then deploy == golden == CPU kernel on the test set.
#
# Here, once (data/ is git-ignored; the four IDX files are ~30 MB):
#   mkdir -p data && cp -r /usr/share/datasets/fashion-mnist data/
# On the GPU machine (a python3 with torch, numpy, numba; nothing is downloaded):
#   bash scripts/gpu_headline.sh OUT_DIR [extra benchmarks/accuracy.py flags]
# e.g. `bash scripts/gpu_headline.sh $OUT --estimate-steps 50` first, to time it.
#
# OUT_DIR receives accuracy.headline.json/.md, teacher.npy and models.tgz (the checkpoints);
# copy them into benchmarks/results/ (models.tgz unpacks to models/<row>/).
set -euo pipefail
out=${1:?usage: gpu_headline.sh OUT_DIR [accuracy.py flags]}
shift
cd "$(dirname "$0")/.."
data=data/fashion-mnist
[ -d "$data" ] || data=/usr/share/datasets/fashion-mnist
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
nvidia-smi -L || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
status=0
python3 benchmarks/accuracy.py --part headline --device cuda --parallel "${PARALLEL:-5}" \
    --threads 2 --golden-limit "${GOLDEN_LIMIT:-300}" --data-path "$data" --out "$work" "$@" \
    || status=$?
mkdir -p "$out"
cp "$work"/accuracy.headline*.json "$work"/accuracy.headline*.md "$out"/ 2>/dev/null || true
[ -f "$work/teacher.npy.json" ] && cp "$work/teacher.npy.json" "$out"/
[ -d "$work/models" ] && tar czf "$out/models.tgz" -C "$work" models
exit $status
