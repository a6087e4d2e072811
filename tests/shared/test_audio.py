from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from blendsync.shared.audio import AudioError, decode_audio
from tests.helpers import BAD_AUDIO, write_bad_audio


@pytest.mark.parametrize(
    "name,sr,channels,subtype",
    [
        ("a.wav", 8000, 1, "PCM_16"),
        ("b.wav", 44100, 2, "PCM_24"),
        ("c.flac", 48000, 1, None),
        ("d.aiff", 22050, 1, None),
        ("e.ogg", 32000, 2, None),
        ("f.wav", 96000, 6, "FLOAT"),
    ],
)
def test_formats_rates_and_channels_to_mono_16k(make_audio, name, sr, channels, subtype):
    p = make_audio(name, 1.5, sr=sr, channels=channels, subtype=subtype)
    a = decode_audio(p, 16000)
    assert a.sample_rate == 16000 and a.samples.ndim == 1 and a.samples.dtype == np.float32
    assert a.duration_s == pytest.approx(1.5, abs=1e-3)
    assert a.source_sample_rate == sr and a.source_channels == channels


def test_mp3_where_the_platform_decodes_it(make_audio, tmp_path):
    y, sr = sf.read(make_audio("a.wav", 1.5))
    p = tmp_path / "a.mp3"
    try:
        sf.write(p, y, sr, format="MP3")
    except (sf.LibsndfileError, TypeError, ValueError) as e:
        pytest.skip(f"libsndfile here has no MP3: {e}")
    a = decode_audio(p, 16000)
    assert a.duration_s == pytest.approx(1.5, abs=0.1)


def test_resampler_keeps_a_tone(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    sf.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), sr)
    y = decode_audio(tmp_path / "tone.wav", 16000).samples
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spec) * 16000 / len(y) - 1000) < 2
    # Real (band-limited) resampling: nothing aliased above -60 dB.
    assert spec[np.abs(np.fft.rfftfreq(len(y), 1 / 16000) - 1000) > 50].max() < spec.max() * 1e-3


def test_real_speech_at_every_rate_decodes(shared_data):
    for p in sorted((shared_data / "speech").iterdir()):
        a = decode_audio(p, 16000)
        assert a.duration_s > 0.9 and np.abs(a.samples).max() <= 1.0


def test_bad_audio_gets_a_clear_error(tmp_path):
    write_bad_audio(tmp_path)
    cases = {**BAD_AUDIO, "missing.wav": "not found"}
    for name, msg in cases.items():
        with pytest.raises(AudioError, match=msg) as e:
            decode_audio(tmp_path / name, 16000)
        assert name in str(e.value)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24"])
def test_samples_clipped_at_the_integer_limits_are_counted_and_warned(shared_data, tmp_path, subtype, caplog):
    import logging

    y, sr = sf.read(shared_data / "speech" / "cmu_arctic_a0007_16k.wav", dtype="float32")
    loud = np.clip(y * 40.0, -1.0, 1.0)  # a recording driven past full scale
    n_clipped = int(np.count_nonzero(np.abs(loud) >= 1.0))
    assert n_clipped > 0.001 * loud.size
    sf.write(tmp_path / "loud.wav", loud, sr, subtype=subtype)
    with caplog.at_level(logging.WARNING):
        dec = decode_audio(tmp_path / "loud.wav", 16000)
    # int16 stores +1.0 as 32767 (read back as 32767/32768): counted all the same.
    assert dec.clipped_samples == n_clipped
    assert "at full scale: the recording clipped" in caplog.text


def test_a_clean_recording_counts_no_clipping(shared_data, caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        dec = decode_audio(shared_data / "speech" / "cmu_arctic_a0007_16k.wav", 16000)
    assert dec.clipped_samples == 0 and "clipped" not in caplog.text


def test_the_stream_checks_what_decode_audio_checks():
    from blendsync.shared.audio import AudioStream

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


def test_an_upload_s_rate_and_length_are_checked_before_a_sample_is_read():
    import io

    from blendsync.shared.audio import decode_audio_bytes

    buf = io.BytesIO()
    sf.write(buf, np.zeros(1000, np.int16), 1, format="WAV", subtype="PCM_16")
    with pytest.raises(AudioError, match="up: its sample rate is 1 Hz; audio from 8000 to 192000 Hz is taken"):
        decode_audio_bytes(buf.getvalue(), 16000, "up", rates=(8000, 192000))
    buf = io.BytesIO()
    sf.write(buf, (np.sin(np.arange(8000 * 12) / 5) * 8000).astype(np.int16), 8000, format="WAV", subtype="PCM_16")
    with pytest.raises(AudioError, match="up: 12 s of audio, over the 10 s taken at once"):
        decode_audio_bytes(buf.getvalue(), 16000, "up", max_duration_s=10)
    assert decode_audio_bytes(buf.getvalue(), 16000, "up", rates=(8000, 192000), max_duration_s=12).duration_s == 12


def _constant_flac(seconds: float, rate: int, channels: int) -> bytes:
    """A FLAC of a constant: megabytes of samples in a few kB (written in blocks)."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    block = np.full((rate, channels), 0.25, np.float32)
    with sf.SoundFile(buf, "w", rate, channels, format="FLAC") as f:
        for _ in range(int(seconds)):
            f.write(block)
    return buf.getvalue()


def test_a_small_upload_of_many_channels_at_a_high_rate_is_never_held_whole():
    import tracemalloc

    from blendsync.shared.audio import decode_audio_bytes

    data = _constant_flac(30, 192_000, 8)  # 46M samples: 184 MB as float32, a few kB as FLAC
    assert len(data) < 200_000
    tracemalloc.start()
    try:
        out = decode_audio_bytes(data, 16000, "bomb.flac", max_duration_s=1800)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.samples.shape == (30 * 16000,) and out.source_channels == 8
    assert peak < 80e6, peak  # the mono samples at 192 kHz (23 MB) and the resampling, not 184 MB


def test_an_upload_over_its_duration_at_48_khz_is_refused_naming_its_rate():
    from blendsync.shared.audio import AudioError, decode_audio_bytes

    with pytest.raises(AudioError, match=r"x\.flac: 8 s at 96000 Hz is 768000 samples, over the 480000 taken"):
        decode_audio_bytes(_constant_flac(8, 96_000, 1), 16000, "x.flac", max_duration_s=10)


def test_decoding_in_blocks_gives_a_whole_read_s_samples(tmp_path):
    import io

    import soundfile as sf

    from blendsync.shared.audio import DECODE_BLOCK_FRAMES, decode_audio, decode_audio_bytes

    rng = np.random.default_rng(0)
    y = (0.3 * rng.standard_normal((3 * DECODE_BLOCK_FRAMES + 123, 3))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, y, 44100, format="WAV", subtype="FLOAT")
    (tmp_path / "a.wav").write_bytes(buf.getvalue())
    whole = decode_audio(tmp_path / "a.wav", 16000)
    blocks = decode_audio_bytes(buf.getvalue(), 16000, "a.wav")
    np.testing.assert_array_equal(whole.samples, blocks.samples)
