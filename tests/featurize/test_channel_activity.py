"""bsfeat info --channels: which channels move, how much, in how many takes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blendsync.featurize.cli import main as bsfeat
from blendsync.featurize.inspect_store import channel_activity
from blendsync.featurize.writer import write_item
from blendsync.shared.featurize_file import FeaturizedFile
from blendsync.shared.store import FeatureStore
from tests.helpers import item_provenance

NAMES = ["still", "half", "once"]


def _store(root):
    """Two takes of 100 frames: "still" is 0 everywhere, "half" is 0.5 on the first half of
    take 0 only, "once" is 1.0 on one frame of each take."""
    fs = FeatureStore(root)
    fs.init()
    prov = item_provenance({"mel": {"n_mels": 80}, "fps": 30.0}, {"name": "rig", "channels": NAMES})
    for k in range(2):
        t = np.zeros((100, 3), np.float32)
        if k == 0:
            t[:50, 1] = 0.5
        t[10 * (k + 1), 2] = 1.0
        ff = FeaturizedFile(np.zeros((100, 80), np.float32), np.zeros((100, 88), np.float32), t, {"frames": 100})
        write_item(fs, f"k{k}", ff, prov)
    return fs


def test_activity_counts_frames_values_and_takes(tmp_path):
    doc = channel_activity(_store(tmp_path / "s.zarr"))["rig"]
    assert (doc["takes"], doc["frames"]) == (2, 200)
    c = doc["channels"]
    assert c["still"] == {"active_fraction": 0.0, "mean": 0.0, "max": 0.0, "takes_moving": 0}
    assert c["half"] == {"active_fraction": 0.25, "mean": 0.125, "max": 0.5, "takes_moving": 1}
    assert c["once"] == {"active_fraction": 0.01, "mean": 0.01, "max": 1.0, "takes_moving": 2}


def test_cli_lists_channels_and_names_those_that_never_move(tmp_path, capsys):
    fs = _store(tmp_path / "s.zarr")
    with pytest.raises(SystemExit) as e:
        bsfeat(["info", str(fs.root), "--channels"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "channel set rig: 2 takes, 200 frames" in out
    assert [ln.split()[0] for ln in out.splitlines() if "(never moves)" in ln] == ["still"]
    with pytest.raises(SystemExit) as e:
        bsfeat(["info", str(fs.root), "--channels", "--json", "--threshold", "0.6"])
    assert json.loads(capsys.readouterr().out)["rig"]["channels"]["half"]["takes_moving"] == 0


@pytest.mark.slow
def test_on_the_example_data_jaw_moves_in_every_take(example_store):
    doc = channel_activity(FeatureStore(example_store), "data_manifest")["arkit52"]
    assert doc["takes"] == 9 and doc["channels"]["jawOpen"]["takes_moving"] == 9
