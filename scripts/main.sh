#!/usr/bin/env bash
# The main job on a fresh machine: set-up, provision the models, then watch the real sample clips like cameras
# (fire, a worker without a hard hat, a car park) and print the events, and detect vessels in the shore frames.
# Usage: bash scripts/main.sh [PATH...]   (PATHs: your own images/videos for `seawatch detect` instead)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export YOLO_CONFIG_DIR="${YOLO_CONFIG_DIR:-${SEAWATCH_CACHE:-$HOME/.cache/seawatch}/ultralytics}"
.venv/bin/seawatch models fetch
.venv/bin/seawatch models list
mkdir -p out
if [ $# -gt 0 ]; then
  .venv/bin/seawatch detect "$@" --out out/detections.jsonl --annotate out/annotated
  echo "main.sh: detections in out/detections.jsonl, annotated media in out/annotated/"
  exit 0
fi
media="${SEAWATCH_SHARED:-../shared}/media"
if [ ! -d "$media" ]; then
  echo "main.sh: no sample media at $media; pass image/video paths as arguments" >&2
  exit 2
fi
echo "main.sh: events (JSON lines) from the sample clips:"
.venv/bin/seawatch run --config examples/sample-media.yaml \
  "flames=$media/B_fire_smoke/flames_closeup.mp4" \
  "factory=$media/C_hardhat/industrial_worker_helmet_clip.mp4" \
  "carpark=$media/D_parking_lanes/carpark_timelapse_nf.mp4" \
  --snapshots out/snapshots | tee out/events.jsonl | cut -c1-240
echo "main.sh: vessels in the shore frames (tiled inference):"
.venv/bin/seawatch detect "$media/A_boats" --models coco_yolov5n --tile 640:0.2 \
  --out out/detections.jsonl --annotate out/annotated
echo "main.sh: events in out/events.jsonl (snapshots in out/snapshots/), detections in out/detections.jsonl," \
  "annotated frames in out/annotated/"
