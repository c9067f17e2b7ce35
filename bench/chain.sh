#!/usr/bin/env bash
# Every stage once on a synthetic dataset in the NIH layout, as a new user runs them: per-stage wall time
# and the job's peak memory (driver process, from /usr/bin/time), one line per stage.
#
#   bash bench/chain.sh [IMAGES] [SIZE] [WORKDIR]      # defaults: 112120 images (the NIH's count), 64 px
#
# The dataset is generated once per WORKDIR and kept (generation is not timed); the stages' outputs are
# replaced on every run. Figures of earlier runs: docs/scaling.md ("The whole chain on one machine").
set -euo pipefail
IMAGES=${1:-112120}
SIZE=${2:-64}
WORK=${3:-/tmp/thorax-chain-$IMAGES-$SIZE}
PY=${PYTHON:-.venv/bin/python}
cd "$(dirname "$0")/.."

DATA=$WORK/data
if [ ! -f "$DATA/Data_Entry_2017.csv" ]; then
  echo "[chain] generating $IMAGES images of $SIZE px in $DATA (not timed)"
  "$PY" jobs/make_synthetic.py --out "$DATA" --images "$IMAGES" --size "$SIZE" --seed 1 > /dev/null
fi
rm -rf "$WORK/manifest.parquet" "$WORK/prepared" "$WORK/runs" "$WORK/scores" "$WORK/eval"

stage() {  # stage NAME COMMAND...: runs it, prints wall seconds and peak memory of the job's own process
  local name=$1; shift
  local log=$WORK/$name.log
  if ! /usr/bin/time -f "%e %M" -o "$WORK/$name.time" "$@" > "$log" 2>&1; then
    echo "[chain] $name FAILED, see $log"; tail -5 "$log"; exit 1
  fi
  read -r seconds kb < "$WORK/$name.time"
  awk -v n="$name" -v s="$seconds" -v kb="$kb" 'BEGIN { printf "[chain] %-10s %7.1f s   driver peak %5.2f GB\n", n, s, kb / 1048576 }'
}

stage manifest "$PY" jobs/manifest.py --data "$DATA" --out "$WORK/manifest.parquet"
stage prepare "$PY" jobs/prepare.py --data "$DATA" --out "$WORK/prepared" --size "$SIZE"
stage train "$PY" jobs/train.py --data "$WORK/prepared" --model small_cnn --size "$SIZE" --epochs 1 \
  --storage "$WORK/runs" --name chain
stage score "$PY" jobs/score.py --checkpoint "$WORK/runs/chain" --input "$DATA" --out "$WORK/scores"
stage evaluate "$PY" jobs/evaluate.py --scores small_cnn="$WORK/scores" --data "$DATA" --out "$WORK/eval"
echo "[chain] done: $IMAGES images of $SIZE px; logs in $WORK"
