"""Features of audio pushed in pieces equal the whole file's, through the same checks."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from blendsync.shared.audio import AudioError, AudioStream
from blendsync.shared.config import FeatureConfig
from blendsync.shared.featurize_file import featurize_file
from blendsync.shared.streams.chunked import FeatureStream


@pytest.mark.parametrize("name,chunk_s", [("ljspeech_LJ050-0131_22k.wav", 0.37), ("cmu_arctic_a0007_16k.wav", 1.5)])
def test_pushed_features_equal_the_whole_files(shared_data, name, chunk_s):
    path = shared_data / "speech" / name
    cfg = FeatureConfig()
    whole = featurize_file(path, None, cfg)
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    fs = FeatureStream(cfg, sr, name)
    step = int(chunk_s * sr)
    parts = [fs.push(data[i : i + step]) for i in range(0, len(data), step)] + [fs.finish()]
    mel = np.concatenate([m for m, _ in parts])
    emo = np.concatenate([e for _, e in parts])
    assert mel.shape == whole.mel.shape and emo.shape == whole.emotion.shape
    np.testing.assert_allclose(mel, whole.mel, atol=1e-4)
    np.testing.assert_allclose(emo, whole.emotion, atol=1e-4, rtol=1e-4)
    assert fs.duration_s == pytest.approx(whole.info["audio_duration_s"])


def test_the_stream_checks_what_decode_audio_checks():
    with pytest.raises(AudioError, match="NaN/inf"):
        AudioStream(16000, 16000, "x").push(np.array([0.1, np.nan], np.float32))
    s = AudioStream(16000, 16000, "short")
    s.push(np.full(1000, 0.1, np.float32))
    with pytest.raises(AudioError, match="shorter than the 0.25 s"):
        s.finish()
    s = AudioStream(16000, 16000, "quiet")
    s.push(np.zeros(16000, np.float32))
    with pytest.raises(AudioError, match="silent"):
        s.finish()
    with pytest.raises(AudioError, match="empty"):
        AudioStream(16000, 16000, "none").finish()
