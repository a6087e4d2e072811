#!/usr/bin/env bash
# The GPU check, one script under 8 minutes on one CUDA GPU: the CUDA tests, then training
# target frames/s (small and full presets, K = 1 and the default K, bf16 autocast) and the
# predict real-time factor. Writes its log to $OUT/gpu_check.log when OUT is set.
#
# The K = 1 golden test is left out: its values are CPU float rounding of the torch version
# that wrote them (on another torch version a parameter differs at 1.6e-4 relative).
# Real test data is read from BLENDSYNC_SHARED_DATA (carry the speech file there).
#
# On a machine with blendsync installed: bash benchmarks/gpu_check.sh
# On a GPU machine whose Python has PyTorch but not the other dependencies: fetch them here
# with scripts/fetch_gpu_wheels.sh, carry .whl, and the script installs them first.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp}/gpu_check.log
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PY" -c "import blendsync.train" 2>/dev/null; then
  # The package's folders under its namespace, without installing it: links inside the
  # repository's own blendsync/ (which `python -m` finds first, from the working directory),
  # removed again at the end.
  for d in shared featurize train; do ln -sfn "../$d" "blendsync/$d"; done
  trap 'rm -f blendsync/shared blendsync/featurize blendsync/train' EXIT
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
K=$("$PY" -c "from blendsync.train.core.config import TrainConfig; print(TrainConfig().stream.frames_per_window)")
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  echo "== CUDA tests"
  timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/train/test_cuda.py tests/train/test_frame_blocks.py \
    --deselect tests/train/test_frame_blocks.py::test_one_frame_per_window_reproduces_the_per_window_model
  echo "== training target frames/s, K = 1 and $K"
  timeout 150 "$PY" benchmarks/bench_frame_blocks.py --device cuda --ks "1,$K" --repeats 3 --small-steps 20 --full-steps 10
  echo "== predict real-time factor"
  timeout 90 "$PY" benchmarks/bench_predict.py --device cuda --ks "1,$K" --repeats 3 --no-ort
} 2>&1 | tee "$LOG"
