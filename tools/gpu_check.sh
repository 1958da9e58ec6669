#!/usr/bin/env bash
# GPU acceptance check: the CUDA tests, engine.bench, stream.bench and stream.bench_streams on CUDA, JSON and logs into
# one folder, within 8 minutes on one GPU (the steps' limits add up to 7.5 minutes). Run it whenever a GPU is lent; paste its summary into the release note.
#
#   bash tools/gpu_check.sh [OUT_DIR]          (default: $OUT if set, else ./gpu-results)
#
# The GPU machine needs only torch, numpy, opencv and safetensors (no MediaPipe, PyAV, aiortc or dlib): landmarks are
# replayed from the benchmark clip's known geometry. Prepare on a machine with the project installed:
#   mkdir -p .gpu && .venv/bin/python -m stream.clips --landmarks .gpu/face_landmarks.npy
# and carry .gpu/ (and, if a package is missing there, wheels in .whl/: they are installed to /tmp/site first).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu-results}}
PY=${PYTHON:-python3}
CONFIG=${GPU_CHECK_CONFIG:-full}     # "small": a quick smoke run of this script (e.g. on a CPU)
SMALL=(); [ "$CONFIG" = small ] && SMALL=(--small)
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && \
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -f .gpu/face_landmarks.npy ]; then export MICROMOTION_FACE_LANDMARKS=$PWD/.gpu/face_landmarks.npy; fi
declare -a SUMMARY=()

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT_DIR/NAME.log, remember the outcome
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT_DIR/$name.log"
  SUMMARY+=("$name: exit $rc in $((SECONDS - t0)) s")
}

step environment 30 "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')"
step gpu_tests 140 "$PY" -m pytest -q -s -m gpu -p no:cacheprovider tests/stream/test_gpu_fastpath.py \
  tests/engine/test_runtime.py tests/engine/test_stylegan2.py tests/engine/test_encoders.py tests/directions/test_rpca.py
step engine_bench 80 "$PY" -m engine.bench "${SMALL[@]}" --reps 10 --json "$OUT_DIR/engine_bench.json"
step stream_bench 60 "$PY" -m stream.bench --config "$CONFIG" --landmarks clip --frames 20 --json "$OUT_DIR/stream_bench.json"
step bench_streams 140 "$PY" -m stream.bench_streams --config "$CONFIG" --streams 1,4,16 --seconds 6 --warmup 4 \
  --max-batch 16 --landmarks clip --no-report --json "$OUT_DIR/bench_streams.json"
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT_DIR/summary.txt"
