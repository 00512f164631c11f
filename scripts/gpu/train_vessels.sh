#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (see scripts/gpu/README.md for the `run` call), from the repository root, with .gpu/
# carried: installs the carried wheels into /tmp/site (only when ultralytics is missing), then runs
# train_vessels.py under an outer timeout so results are always collected into $OUT.
# Smoke test on a CPU machine: OUT=/tmp/vessel_smoke PYTHON=.venv/bin/python bash scripts/gpu/train_vessels.sh --smoke
# Environment: OUT (required), PYTHON (default python3), TRAIN_LIMIT_S (outer limit, default 500 s).
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the folder that receives the results}"
mkdir -p "$OUT"
# shellcheck source=scripts/gpu/device_env.sh
source scripts/gpu/device_env.sh  # PY, the carried wheels, the GPU
# INT first (train_vessels.py then collects the last saved weights), KILL 30 s later
timeout --signal=INT --kill-after=30 "${TRAIN_LIMIT_S:-500}" "$PY" scripts/gpu/train_vessels.py "$@" 2>&1 | tee "$OUT/train.log"
rc=${PIPESTATUS[0]}
ls -la "$OUT"
exit "$rc"
