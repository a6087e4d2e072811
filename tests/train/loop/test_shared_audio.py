"""The same recording in the training split and a validation/test split: extract warns,
fit refuses unless asked to allow it."""

from __future__ import annotations

import logging
import shutil

import pytest

from blendsync.featurize.extract import extract
from blendsync.shared.config import FeatureConfig
from blendsync.train.cli import main
from tests.helpers import write_livelink, write_manifest


@pytest.fixture
def shared_store(make_audio, tmp_path):
    """a.wav (train) and its byte-identical copy b.wav (val, other targets), c.wav (train)."""
    a = make_audio("a.wav", 3.0, seed=1)
    shutil.copy(a, tmp_path / "b.wav")
    make_audio("c.wav", 3.0, seed=2)
    for i, name in enumerate(("ta.csv", "tb.csv", "tc.csv")):
        write_livelink(tmp_path / name, 3.0, seed=i)
    man = write_manifest(
        tmp_path / "m.csv",
        [
            {"audio": "a.wav", "targets": "ta.csv", "split": "train", "id": "take_a"},
            {"audio": "b.wav", "targets": "tb.csv", "split": "val", "id": "take_b"},
            {"audio": "c.wav", "targets": "tc.csv", "split": "train", "id": "take_c"},
        ],
    )
    return man, tmp_path / "f.zarr"


def test_extract_warns_about_audio_in_two_splits(shared_store, caplog):
    man, store = shared_store
    with caplog.at_level(logging.WARNING):
        r = extract(man, store, FeatureConfig(), executor="serial")
    assert r.ok and r.stored == 3  # stored all the same
    assert len(r.shared_audio) == 1
    assert "row 1 (take_a, train), row 2 (take_b, val)" in r.shared_audio[0]
    assert "more than one split" in caplog.text


def test_fit_refuses_audio_in_two_splits_unless_allowed(shared_store, tmp_path, capsys):
    man, store = shared_store
    extract(man, store, FeatureConfig(), executor="serial")
    args = ["-q", "fit", "--store", str(store), "--epochs", "1", "--max-steps", "1", "--no-progress"]
    with pytest.raises(SystemExit) as e:
        main([*args, "--out", str(tmp_path / "r1")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "the same audio is in more than one split" in err and "take_a (train), take_b (val)" in err
    assert "--allow-shared-audio" in err and "Traceback" not in err
    assert not (tmp_path / "r1" / "checkpoints").exists()
    with pytest.raises(SystemExit) as e:
        main([*args, "--out", str(tmp_path / "r2"), "--allow-shared-audio"])
    assert e.value.code == 0
    assert (tmp_path / "r2" / "checkpoints" / "last.pt").is_file()
    assert "allowed by --allow-shared-audio" in capsys.readouterr().err


def test_distinct_audio_passes_silently(make_audio, tmp_path, caplog):
    make_audio("a.wav", 2.0, seed=1)
    make_audio("b.wav", 2.0, seed=2)
    man = write_manifest(tmp_path / "m.csv", [{"audio": "a.wav", "split": "train"}, {"audio": "b.wav", "split": "val"}])
    with caplog.at_level(logging.WARNING):
        r = extract(man, tmp_path / "f.zarr", FeatureConfig(), executor="serial")
    assert r.shared_audio == [] and "more than one split" not in caplog.text
