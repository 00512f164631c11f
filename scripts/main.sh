#!/usr/bin/env bash
# The main job on a fresh machine: set-up, provision the models, analyse the sample media.
# Usage: bash scripts/main.sh [PATH...]   (default: the real sample media in ../shared/media)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export YOLO_CONFIG_DIR="${YOLO_CONFIG_DIR:-${SEAWATCH_CACHE:-$HOME/.cache/seawatch}/ultralytics}"
.venv/bin/seawatch models fetch
.venv/bin/seawatch models list
if [ $# -eq 0 ]; then
  media="${SEAWATCH_SHARED:-../shared}/media"
  if [ ! -d "$media" ]; then
    echo "main.sh: no sample media at $media; pass image/video paths as arguments" >&2
    exit 2
  fi
  set -- "$media/B_fire_smoke" "$media/C_hardhat" "$media/A_boats"
fi
mkdir -p out
.venv/bin/seawatch detect "$@" --out out/detections.jsonl --annotate out/annotated
echo "main.sh: detections in out/detections.jsonl, annotated media in out/annotated/"
