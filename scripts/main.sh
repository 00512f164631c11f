#!/usr/bin/env bash
# The main job on a fresh machine: set-up, provision the models, then `seawatch serve` with its embedded default:
# a quay camera (the shared fire clip looped as a live source), a simulated drone flying a patrol, the harbour's AIS
# log, SQLite under ./seawatch-data, and an admin user whose one-time password is printed. Open the printed address:
# live events, the drone and the vessels on the map. Ctrl-C stops it (open incidents are ended and stored).
#
# Usage: bash scripts/main.sh [SERVE OPTIONS]       e.g. --source cam1=rtsp://user:pass@10.0.0.5/stream1 --port 8090
#                                                   or  --host 0.0.0.0 (reachable from other machines)
#        bash scripts/main.sh samples               the batch analysis instead: events of the sample clips as JSON
#                                                   lines, then tiled vessel detection in the shore frames (out/)
#        bash scripts/main.sh detect PATH...        `seawatch detect` on your own images / folders / videos (out/)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export YOLO_CONFIG_DIR="${YOLO_CONFIG_DIR:-${SEAWATCH_CACHE:-$HOME/.cache/seawatch}/ultralytics}"
.venv/bin/seawatch models fetch
.venv/bin/seawatch models list
media="${SEAWATCH_SHARED:-../shared}/media"

case "${1:-}" in
  detect)
    shift
    mkdir -p out
    .venv/bin/seawatch detect "$@" --out out/detections.jsonl --annotate out/annotated
    echo "main.sh: detections in out/detections.jsonl, annotated media in out/annotated/"
    ;;
  samples)
    if [ ! -d "$media" ]; then
      echo "main.sh: no sample media at $media (set SEAWATCH_SHARED)" >&2
      exit 2
    fi
    mkdir -p out
    echo "main.sh: events (JSON lines) from the sample clips:"
    .venv/bin/seawatch run --config examples/sample-media.yaml \
      "flames=$media/B_fire_smoke/flames_closeup.mp4" \
      "factory=$media/C_hardhat/industrial_worker_helmet_clip.mp4" \
      "carpark=$media/D_parking_lanes/carpark_timelapse_nf.mp4" \
      --snapshots out/snapshots | tee out/events.jsonl | cut -c1-240
    # the fine-tuned vessel model when this machine has one (trained on a GPU: scripts/gpu/README.md), else COCO's boat
    vessel_model=coco_yolov5n
    .venv/bin/seawatch models list 2>/dev/null | grep -Eq '^vessel[[:space:]].*yes' && vessel_model=vessel
    echo "main.sh: vessels in the shore frames (tiled inference, $vessel_model):"
    .venv/bin/seawatch detect "$media/A_boats" --models "$vessel_model" --tile auto:0.2 \
      --out out/detections.jsonl --annotate out/annotated
    echo "main.sh: events in out/events.jsonl (snapshots in out/snapshots/), detections in out/detections.jsonl," \
      "annotated frames in out/annotated/"
    ;;
  *)
    if [ ! -d "$media" ] && [[ " $* " != *" --source "* ]]; then
      echo "main.sh: no sample media at $media: the demo camera is missing (give --source ID=URL for your own)" >&2
    fi
    exec .venv/bin/seawatch serve "$@"
    ;;
esac
