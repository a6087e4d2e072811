#!/usr/bin/env bash
# Download the wheels the GPU check needs on a GPU machine whose image has Python 3.12 and
# PyTorch but not blendsync's other dependencies, into .whl/ (ignored by git). Run it here,
# where the package registry is reachable; then carry .whl to the GPU machine and run
# benchmarks/gpu_check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY=${PYTHON:-.venv/bin/python}
# Everything blendsync and its tests import, except torch (the image's own CUDA build).
"$PY" - > /tmp/blendsync-gpu-reqs.txt <<'PYEOF'
import tomllib
d = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = d["dependencies"] + [r for r in d["optional-dependencies"]["test"] if "hadolint" not in r and "moto" not in r]
print("\n".join(r for r in reqs if not r.startswith("torch")))
PYEOF
plat=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plat="$plat --platform $p"
done
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp $plat \
  -d .whl -r /tmp/blendsync-gpu-reqs.txt
# The image already holds these (KINDS.md); leaving them out keeps the carried tree small.
rm -f .whl/torch-* .whl/nvidia_* .whl/triton-* .whl/numpy-* .whl/scipy-* .whl/matplotlib-* .whl/pillow-* \
      .whl/onnx-* .whl/onnxruntime-* .whl/onnxscript-* .whl/onnx_ir-* .whl/sympy-* .whl/networkx-*
du -sh .whl
