"""predict over files: features started while the model loads, files side by side, and
nothing written when the checkpoint or the options turn out unusable."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from blendsync.shared.config import FeatureConfig, MelConfig


def test_options_the_checkpoint_rejects_write_nothing(shared_data, checkpoint, tmp_path):
    from blendsync.train.inference.batch import predict

    files = [shared_data / "speech" / "cmu_arctic_a0007_16k.wav", shared_data / "speech" / "sr_french.aiff"]
    with pytest.raises(ValueError, match="sideways"):
        predict(files, checkpoint, tmp_path / "o", channel_order="sideways")
    assert not (tmp_path / "o").exists()


def test_a_damaged_checkpoint_writes_nothing(shared_data, checkpoint, tmp_path):
    from blendsync.train.core.checkpoint import CheckpointError
    from blendsync.train.inference.batch import predict

    bad = tmp_path / "bad.pt"
    bad.write_bytes(checkpoint.read_bytes()[:-300])
    with pytest.raises(CheckpointError):
        predict([shared_data / "speech" / "cmu_arctic_a0007_16k.wav"], bad, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_features_read_ahead_with_another_config_are_computed_again(
    shared_data, checkpoint, tmp_path, monkeypatch, caplog
):
    """A feature config read ahead that the load does not confirm: the files' features are
    computed again with the checkpoint's own, and the curves are those of a plain run."""
    import blendsync.train.inference.batch as batch

    audio = shared_data / "speech" / "cmu_arctic_a0007_16k.wav"
    batch.predict([audio], checkpoint, tmp_path / "plain", formats=("npy",), plot=False)
    other = FeatureConfig(mel=MelConfig(n_mels=40))
    monkeypatch.setattr(batch, "peek_feature_config", lambda _: other)
    with caplog.at_level(logging.WARNING, logger="blendsync.train.inference.batch"):
        batch.predict([audio], checkpoint, tmp_path / "again", formats=("npy",), plot=False)
    assert "computed again" in caplog.text
    stem = audio.stem + ".npy"
    assert np.array_equal(np.load(tmp_path / "again" / stem), np.load(tmp_path / "plain" / stem))


def test_a_long_file_and_lines_together_give_each_files_own_curves(shared_data, checkpoint, tmp_path):
    """A 45 s file (pieces on every core) beside short lines (one core each): every file's
    curves are those of the file animated alone."""
    import soundfile as sf

    from blendsync.shared.audio import decode_audio
    from blendsync.train.inference.batch import predict
    from blendsync.train.inference.predict import Predictor, animate_file

    speech = shared_data / "speech"
    y = decode_audio(speech / "ljspeech_LJ050-0131_22k.wav", 16000).samples
    long = tmp_path / "in" / "long.wav"
    long.parent.mkdir()
    sf.write(long, np.tile(y, 6)[: 45 * 16000], 16000)
    files = [speech / "cmu_arctic_a0007_16k.wav", long, speech / "sr_english_44k.wav"]
    rep = predict(files, checkpoint, tmp_path / "o", formats=("npy",), plot=False)
    assert len(rep.animated) == 3 and rep.wall_s > 0 and rep.real_time_factor > 0
    pred = Predictor.load(checkpoint)
    for audio in files:
        alone, _ = animate_file(pred, audio, fps=60)
        assert np.array_equal(np.load(tmp_path / "o" / f"{audio.stem}.npy"), alone), audio.name


def test_the_command_starts_without_torch():
    """predict's files start before torch is imported: the CLI module and the files pipeline
    import neither torch nor the model."""
    import subprocess
    import sys

    from tests.helpers import REPO

    code = (
        "import sys\n"
        "import blendsync.train.cli.inference, blendsync.train.inference.batch\n"
        "print(sorted(m for m in ('torch', 'zarr', 'matplotlib', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
