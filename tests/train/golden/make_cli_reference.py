#!/usr/bin/env python3
"""Regenerate cli_reference.json: the losses a tiny `bstrain fit` run logs, end to end
through the command line (config file, options, streaming, default loss, validation on
held-out tails, checkpoints). tests/train/test_golden_cli.py runs the same command and
compares. Regenerate only after a deliberate change to what training computes:

    .venv/bin/python tests/train/golden/make_cli_reference.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from blendsync.train.cli import main as bstrain  # noqa: E402
from tests.helpers import make_random_store  # noqa: E402

OUT = Path(__file__).with_name("cli_reference.json")
CONFIG = {
    "preset": "custom",
    "model": {"d_model": 16, "heads": 2, "mel_layers": 1, "emotion_layers": 1, "dropout": 0.0},
    "stream": {"window": 48, "lookahead": 4, "batch_streams": 3, "frames_per_window": 8},
    "optim": {"epochs": 3, "warmup_steps": 4, "lr": 2e-3},
    "diagnostics": {"every_steps": 0},
    "seed": 7,
}


def cli_run() -> dict:
    """`bstrain fit` on a small learnable store; its train and validation records."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fs, _ = make_random_store(tmp / "s.zarr", [90, 140, 75, 120], channels=4, seed=11, learnable=True)
        (tmp / "c.yaml").write_text(yaml.safe_dump(CONFIG))
        try:
            bstrain(["-q", "fit", "--store", str(fs.root), "--config", str(tmp / "c.yaml"), "--out", str(tmp / "run"),
                     "--validate-every", "5", "--no-progress", "--device", "cpu"])
        except SystemExit as e:
            if e.code != 0:
                raise RuntimeError(f"bstrain fit exited {e.code}") from None
        recs = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [{k: r[k] for k in ("step", "loss", "mse", "mouth", "expression", "consistency", "alpha")}
             for r in recs if r["kind"] == "train"]
    val = [{"step": r["step"], "loss": r["loss"], "mse": r["metrics"]["mse"], "skill": r["metrics"]["skill"]}
           for r in recs if r["kind"] == "val"]
    return {"train": train, "val": val}


def main() -> None:
    torch.set_num_threads(1)
    doc = {"fit": cli_run(), "torch": torch.__version__}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}: {len(doc['fit']['train'])} train and {len(doc['fit']['val'])} validation records")


if __name__ == "__main__":
    main()
