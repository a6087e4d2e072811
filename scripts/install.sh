#!/usr/bin/env bash
# Create .venv and install blendsync with its test extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned to the CPU build: the package's plain torch requirement is then met.
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
# The package folders map onto blendsync.* (pyproject's package-dir), so setuptools installs it
# in editable mode through an import finder and says so with a note on every install; the
# note is information only, so it is filtered out of a quiet install.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -c "import blendsync.featurize.cli, blendsync.train.cli, opensmile, librosa, zarr, distributed, torch; print('blendsync installed in .venv, torch', torch.__version__)"
