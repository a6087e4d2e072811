#!/usr/bin/env python3
"""How far the golden references move between CPU kernel sets: the tolerance behind
tests/helpers.py's KEY_BIAS_ABS_TOL.

Runs make_k1_reference's model outputs and training run and make_cli_reference's CLI run
once per ATEN_CPU_CAPABILITY (avx512, avx2, default: no SIMD), each in a fresh process as
torch reads it at start-up, one thread as the tests run, and prints per reference the
largest relative difference from the committed values, and the values beyond 1e-5:

    .venv/bin/python tests/train/golden/cross_kernel.py

On a 2-core AMD EPYC with AVX-512 and torch 2.13.0: model outputs at most 1.6e-6 relative
(no SIMD), the CLI run 2.0e-7; the training run's parameter summaries agree to 1.2e-7 but for
the attention input biases (qkv.bias, in_proj_bias): up to 2.7e-4 absolute under AVX2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CAPABILITIES = ("avx512", "avx2", "default")

_DUMP = """
import importlib.util, json, sys, torch
from pathlib import Path
sys.path.insert(0, {repo!r})
torch.set_num_threads(1)
out = {{}}
for name, fns in (("make_k1_reference", ["model_outputs", "training_run"]), ("make_cli_reference", ["cli_run"])):
    spec = importlib.util.spec_from_file_location(name, Path({here!r}) / f"{{name}}.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    for f in fns:
        out[f] = getattr(m, f)()
Path(sys.argv[1]).write_text(json.dumps(out))
"""


def differences(got, want, path=""):
    """(path, absolute, relative) for every float of want."""
    if isinstance(want, dict):
        for k in want:
            yield from differences(got[k], want[k], f"{path}/{k}")
    elif isinstance(want, list):
        for i, (g, w) in enumerate(zip(got, want)):
            yield from differences(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        yield path, abs(got - want), abs(got - want) / max(abs(want), 1e-12)


def main() -> None:
    k1 = json.loads((HERE / "k1_reference.json").read_text())
    cli = json.loads((HERE / "cli_reference.json").read_text())
    golden = {"model_outputs": k1["model"], "training_run": k1["fit"], "cli_run": cli["fit"]}
    for cap in CAPABILITIES:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "ref.json"
            env = {**os.environ, "ATEN_CPU_CAPABILITY": cap}
            code = _DUMP.format(repo=str(REPO), here=str(HERE))
            subprocess.run([sys.executable, "-c", code, str(out)], env=env, check=True, capture_output=True)
            got = json.loads(out.read_text())
        for name, want in golden.items():
            d = list(differences(got[name], want))
            beyond = [(p, a) for p, a, r in d if r > 1e-5 and a > 1e-7]
            print(f"{cap:8s} {name:14s} largest relative {max(r for _, _, r in d):.2e}; beyond 1e-5: {len(beyond)}")
            for p, a in beyond:
                print(f"    {p}: {a:.2e} absolute")


if __name__ == "__main__":
    main()
