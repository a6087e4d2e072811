#!/usr/bin/env bash
# Download the wheels the GPU check needs on a GPU machine whose image has Python 3.12 and
# PyTorch but not blendsync's other dependencies, into .whl/ (ignored by git). Run it here,
# where the package registry is reachable; then carry .whl to the GPU machine and run
# benchmarks/gpu_check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY=${PYTHON:-.venv/bin/python}
"$PY" - > /tmp/blendsync-gpu-reqs.txt <<'PYEOF'
import tomllib
d = tomllib.load(open("pyproject.toml", "rb"))["project"]
# Left out: torch (the image's own CUDA build), the S3 test server, the Dockerfile linter,
# pylivelinkface (an sdist only) and PyAV (large): the GPU check's tests import none of them.
skip = ("torch", "hadolint", "moto", "pylivelinkface", "av>", "av=")
reqs = d["dependencies"] + d["optional-dependencies"]["test"]
print("\n".join(r for r in reqs if not r.startswith(skip)))
PYEOF
plat=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plat="$plat --platform $p"
done
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp $plat \
  -d .whl -r /tmp/blendsync-gpu-reqs.txt
# The image already holds these (the device library's KINDS.md); leaving them out keeps the
# carried tree under its 64 MiB. The S3 client stack is not needed by the GPU check either.
for name in torch nvidia_ triton numpy scipy matplotlib pillow onnx onnxruntime onnxscript onnx_ir sympy networkx \
            llvmlite numba pyarrow pandas scikit_learn grpcio tensorboard tensorboard_data_server fonttools h5py \
            aiohttp kiwisolver pygments hypothesis setuptools pyyaml mpmath tornado multidict narwhals msgpack \
            pytest ml_dtypes botocore aiobotocore boto3 s3transfer s3fs jinja2 markupsafe requests urllib3 idna \
            certifi charset_normalizer packaging psutil joblib threadpoolctl fsspec cloudpickle toolz click \
            filelock typing_extensions attrs yarl frozenlist aiosignal propcache sortedcontainers tqdm rich \
            markdown_it_py mdurl protobuf absl_py werkzeug markdown pluggy iniconfig contourpy cycler \
            pyparsing python_dateutil six zipp lazy_loader xxhash; do
  rm -f .whl/"$name"-*
done
du -sh .whl
