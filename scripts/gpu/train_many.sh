#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: several train_vessels.py runs at once on the one GPU (a lease is short, and one run
# leaves the GPU mostly idle: the data loader bounds it), each under the same outer timeout, with the loader
# workers split between them. Each run's results are packed into $OUT/<name>.tgz (best.pt, results.csv,
# refine_results.csv, args.yaml, run.json, train.log; no best.onnx: `seawatch models train --import` exports
# and verifies it here), since $OUT brings back at most 8 files.
# Usage: bash scripts/gpu/train_many.sh NAME "train_vessels.py options" [NAME "options" ...]
# Environment: OUT (required), PYTHON (default python3), TRAIN_LIMIT_S (outer limit per run, default 500 s),
#              RUNS_DIR (scratch, default /tmp/vessel_runs).
# Smoke test on a CPU machine:
#   OUT=/tmp/many PYTHON=.venv/bin/python bash scripts/gpu/train_many.sh a "--smoke" b "--smoke --train-too all"
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the folder that receives the results}"
(( $# >= 2 && $# % 2 == 0 )) || { echo "usage: $0 NAME OPTIONS [NAME OPTIONS ...]" >&2; exit 2; }
mkdir -p "$OUT"
# shellcheck source=scripts/gpu/device_env.sh
source scripts/gpu/device_env.sh  # PY, the carried wheels, the GPU
RUNS=${RUNS_DIR:-/tmp/vessel_runs}
n=$(( $# / 2 ))
cores=$(nproc)
workers=$(( (cores - 2) / n )); (( workers >= 1 )) || workers=1
names=(); pids=()
while (( $# )); do
  name=$1; opts=$2; shift 2
  [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "bad run name: $name" >&2; exit 2; }
  rm -rf "$RUNS/$name"; mkdir -p "$RUNS/$name/out"
  # shellcheck disable=SC2086  # the options are words on purpose
  timeout --signal=INT --kill-after=30 "${TRAIN_LIMIT_S:-500}" "$PY" scripts/gpu/train_vessels.py \
    --out "$RUNS/$name/out" --work "$RUNS/$name/work" --workers "$workers" $opts \
    > "$RUNS/$name/out/train.log" 2>&1 &
  names+=("$name"); pids+=($!)
  echo "run $name (pid $!, $workers workers): $opts"
done
rc=0
for i in "${!names[@]}"; do
  wait "${pids[$i]}"; r=$?
  name=${names[$i]}
  echo "== $name: exit $r"
  (( r == 0 )) || rc=$r
  grep -E "SUMMARY|Error|error:|Traceback|epochs completed|refine:" "$RUNS/$name/out/train.log" | tail -n 8
  tar -C "$RUNS/$name/out" --exclude=best.onnx -czf "$OUT/$name.tgz" . && ls -la "$OUT/$name.tgz"
done
exit "$rc"
