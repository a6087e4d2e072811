#!/usr/bin/env bash
# Set up and run the main job on the example data that ships in the repo:
# data_manifest.csv -> features.zarr (log-mel + eGeMAPS + Live Link Face targets)
# -> runs/example (a trained checkpoint, metrics and plots).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/bsfeat extract data_manifest.csv --store features.zarr "$@"
.venv/bin/bsfeat verify features.zarr
.venv/bin/bsfeat info features.zarr
if [ -f runs/example/checkpoints/last.pt ]; then
  .venv/bin/bstrain fit --store features.zarr --out runs/example --resume   # finishes or keeps it
else
  .venv/bin/bstrain fit --store features.zarr --out runs/example --epochs 60
fi
