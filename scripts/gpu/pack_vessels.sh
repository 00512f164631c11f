#!/usr/bin/env bash
# Build .gpu/ (here, on the CPU): the vessel frames of datasets/vessels.yaml re-encoded small, the base weights,
# the wheels the GPU machine lacks (ultralytics and its small deps, for Python 3.12) and provenance.json.
# Usage: bash scripts/gpu/pack_vessels.sh [pack_vessels.py options, e.g. --quality 75 --seed 0]
# Then: the `run` call in scripts/gpu/README.md (carry [".gpu"]).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
# ultralytics' pins as installed here; polars is left out on purpose (a 54 MB runtime wheel): train_vessels.py
# reads results.csv without it. Everything else ultralytics needs is already on the GPU machine.
WHEELS=(ultralytics==8.4.190 ultralytics-thop==2.2.3 ultralytics-platform==0.1.99)
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p .gpu/whl
if ! "$PY" -c 'import sys, glob; sys.exit(len(glob.glob(".gpu/whl/*.whl")) != int(sys.argv[1]))' "${#WHEELS[@]}"; then
  rm -f .gpu/whl/*.whl
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl "${WHEELS[@]}"
fi
nice -n 10 "$PY" scripts/gpu/pack_vessels.py "$@"
du -sh --apparent-size .gpu/* .gpu | sed "s/^/size: /"
