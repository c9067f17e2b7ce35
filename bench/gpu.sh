#!/usr/bin/env bash
# One-GPU benchmark of the fast path: DenseNet-121 at 224 px, training images/s (synthetic tensors vs
# prepared shards vs the input path alone) and scoring images/s (predictions only vs + fast all-class
# maps), collectives on NCCL, bf16 vs fp32; a table and one closing JSON line. Runs without Ray, Captum,
# s3fs or pydicom (the GPU machine this project is lent has none of them). Stops itself within 8 minutes,
# data generation included (bench/gpu.py skips what would start after --budget-s, 420 s; this kills at 480 s).
#
#   bash bench/gpu.sh                       # the GPU run (defaults of bench/gpu.py)
#   bash bench/gpu.sh --model small_cnn --size 32 --images 96 --batch-size 8 --train-steps 3   # tiny, CPU
#
# Flags go to bench/gpu.py (--help). Environment: PYTHON (default .venv/bin/python, else python3),
# BENCH_TIMEOUT_S (default 480).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
else
  echo "nvidia-smi not found: no GPU here, running on CPU (use tiny sizes)"
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"
exec timeout --signal=INT --kill-after=10 "${BENCH_TIMEOUT_S:-480}" "$PY" bench/gpu.py "$@"
