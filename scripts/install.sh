#!/usr/bin/env bash
# Create .venv and install blendsync with its test extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, so that the package's plain torch requirement is already met and pip pulls no
# other build. Which torch is the user's choice:
#   TORCH_VERSION    the release (default 2.13.0)
#   TORCH_INDEX_URL  where it comes from (default: pip's own index and configuration), e.g.
#                    https://download.pytorch.org/whl/cpu for the CPU build on a machine whose
#                    default index serves the CUDA one, or .../whl/cu128 for CUDA 12.8
#   TORCH_INSTALL    "skip": keep the torch .venv already has
if [ "${TORCH_INSTALL:-}" != skip ]; then
  torch_args=("torch==${TORCH_VERSION:-2.13.0}")
  if [ -n "${TORCH_INDEX_URL:-}" ]; then torch_args+=(--index-url "$TORCH_INDEX_URL"); fi
  .venv/bin/python -m pip install -q "${torch_args[@]}"
fi
# The package folders map onto blendsync.* (pyproject's package-dir), so setuptools installs it
# in editable mode through an import finder and says so with a note on every install; the
# note is information only, so it is filtered out of a quiet install.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -c "import blendsync.featurize.cli, blendsync.train.cli, opensmile, librosa, zarr, distributed, torch; print('blendsync installed in .venv, torch', torch.__version__)"
