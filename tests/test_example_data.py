"""The example data that ships in the repo: what the issue promises, and learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from blendsync.featurize.extract import extract
from blendsync.shared.channels import ARKIT_52
from blendsync.shared.config import FeatureConfig
from blendsync.shared.manifest import read_manifest
from blendsync.shared.store import FeatureStore
from blendsync.shared.targets import parse_timecode

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "data_manifest.csv"


def test_example_manifest_promises():
    m = read_manifest(MANIFEST)
    assert not m.problems and len(m.rows) >= 8
    speakers = {r.speaker for r in m.rows}
    assert len(speakers) >= 3
    val = {r.speaker for r in m.rows if r.split == "val"}
    assert len(val) == 1 and all(r.split == "train" for r in m.rows if r.speaker not in val)
    total = 0
    for r in m.rows:
        info = sf.info(str(r.audio))
        assert 5.0 <= info.duration <= 20.0, r.audio
        total += r.audio.stat().st_size + r.targets.path.stat().st_size
        lines = r.targets.path.read_text().splitlines()
        header = lines[0].split(",")
        assert header[:3] == ["Timecode", "BlendshapeCount", "EyeBlinkLeft"]
        first, second = lines[1].split(","), lines[2].split(",")
        step = parse_timecode(second[0]) - parse_timecode(first[0])
        assert step == pytest.approx(1 / 60, abs=1e-4)
        assert parse_timecode(first[0]) > 3600  # wall clock, not zero-based
        assert all(len(v.split(".")[1]) == 6 for v in first[2:54])
    assert total < 10 * 2**20


@pytest.mark.slow
def test_example_targets_follow_the_speech(tmp_path):
    r = extract(MANIFEST, tmp_path / "f.zarr", FeatureConfig(), executor="dask", workers=2)
    assert r.ok and r.computed == len(read_manifest(MANIFEST).rows)
    fs = FeatureStore(tmp_path / "f.zarr")
    jaw = ARKIT_52.index("jawOpen")
    for key in r.keys:
        item = fs.read_item(key)
        loud = np.log(np.exp(item.mel).sum(axis=1))
        # jawOpen leads the audio by 60 ms (2 frames): compare with the energy 2 frames on.
        rho = np.corrcoef(item.targets[:-2, jaw], loud[2:])[0, 1]
        assert rho > 0.5, (key, rho)
        blink = item.targets[:, ARKIT_52.index("eyeBlinkLeft")]
        assert blink.max() > 0.5


@pytest.mark.slow
def test_the_main_job_prints_no_warning_and_starts_no_cluster(tmp_path, capsys):
    # The README's first command on the example data: nothing a user should have to read past.
    from blendsync.featurize.cli import main as bsfeat

    for args in (
        ["extract", str(MANIFEST), "--store", str(tmp_path / "f.zarr"), "--no-progress"],
        ["verify", str(tmp_path / "f.zarr")],
        ["info", str(tmp_path / "f.zarr")],
    ):
        with pytest.raises(SystemExit) as e:
            bsfeat(args)
        assert e.value.code == 0
    err = capsys.readouterr().err
    assert "running in this process" in err  # 80 s of audio: no cluster to wait for
    from blendsync.train.cli import main as bstrain

    with pytest.raises(SystemExit) as e:
        bstrain(
            [
                "fit",
                "--store",
                str(tmp_path / "f.zarr"),
                "--out",
                str(tmp_path / "run"),
                "--max-steps",
                "3",
                "--no-progress",
            ]
        )
    assert e.value.code == 0
    err += capsys.readouterr().err
    assert "WARNING" not in err and "Warning" not in err
