#!/usr/bin/env bash
# Create .venv and install blendsync with its test extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -c "import blendsync.featurize.cli, opensmile, librosa, zarr, distributed; print('blendsync installed in .venv')"
