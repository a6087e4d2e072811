#!/usr/bin/env bash
# Run the test suite (installs into .venv first when needed). Arguments go to pytest;
# --fast leaves out the tests marked slow (clusters, subprocess kills, torchrun, torch.compile,
# long files, full CLI runs and the docs' recipes): under 2 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] || bash scripts/install.sh
args=()
for a in "$@"; do
  if [ "$a" = --fast ]; then args+=(-m "not slow"); else args+=("$a"); fi
done
exec .venv/bin/python -m pytest ${args[@]+"${args[@]}"}
