# Sourced (not run) by train_vessels.sh and train_many.sh ON THE GPU MACHINE, from the repository root: sets PY
# (PYTHON, default python3), installs the carried wheels into /tmp/site when ultralytics is missing (exits 2 when
# it cannot), prints the GPU and unbuffers Python's output.
PY=${PYTHON:-python3}
if ! "$PY" -c 'import ultralytics' 2>/dev/null; then
  ls .gpu/whl/*.whl >/dev/null 2>&1 || { echo "no .gpu/whl wheels: run scripts/gpu/pack_vessels.sh and carry .gpu" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export PYTHONUNBUFFERED=1
