#!/usr/bin/env bash
# Run the test suite (installs into .venv first when needed).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] || bash scripts/install.sh
exec .venv/bin/python -m pytest "$@"
