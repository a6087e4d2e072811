"""A long file's openSMILE pass in pieces at once: the plan covers every row once with its
warm-up and tail, and the stitched rows are the one pass's, bit for bit (checked on real
speech); where neighbours disagree the file falls back to one pass."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.shared.audio import decode_audio
from blendsync.shared.config import EmotionConfig
from blendsync.shared.features import emotion_rows
from blendsync.shared.features import pieces as fp
from blendsync.shared.features.pieces import CHECK_ROWS, LLD_RATE, Workers, plan


@settings(max_examples=300, deadline=None)
@given(
    seconds=st.floats(0.3, 900.0),
    parts=st.integers(1, 8),
    step=st.sampled_from([1, 2, 3]),
    context_s=st.sampled_from([0.5, 1.0, 2.0]),
    sr=st.sampled_from([16000, 22050, 48000]),
)
def test_the_plan_covers_every_row_once_with_warm_up_and_tail(seconds, parts, step, context_s, sr):
    n = int(seconds * sr)
    pieces = plan(n, sr, context_s, step / LLD_RATE, parts)
    assert 1 <= len(pieces) <= parts
    if sr % LLD_RATE or seconds < 2 * fp.MIN_PIECE_S:
        assert len(pieces) == 1
    assert pieces[0].keep_from == 0 and pieces[0].start_sample == 0 and pieces[0].first_row == 0
    assert pieces[-1].keep_to is None and pieces[-1].stop_sample == n
    spf = sr // LLD_RATE
    context = round(context_s * LLD_RATE)
    for a, b in zip(pieces, pieces[1:], strict=False):
        assert a.keep_to == b.keep_from > a.keep_from  # contiguous, in order, none empty
        # The later piece's warm-up: WARM_UP_S of audio before the first row compared.
        assert b.start_sample == b.first_row * step * spf
        assert (b.keep_from - CHECK_ROWS - b.first_row) * step >= fp.WARM_UP_S * LLD_RATE
        # The earlier piece's tail: TAIL_S of audio after the last compared row's context.
        end_frame = (b.keep_from + CHECK_ROWS - 1) * step + context
        assert a.stop_sample >= min(n, (end_frame + fp.TAIL_S * LLD_RATE) * spf)
    if len(pieces) > 1:
        rows = [(p.keep_to or (n // spf - context) // step) - p.keep_from for p in pieces]
        assert max(rows) - min(rows) <= 1 + len(pieces)  # balanced


@pytest.fixture(scope="module")
def speech_45s(shared_data) -> np.ndarray:
    parts = [decode_audio(p, 16000).samples for p in sorted((shared_data / "speech").glob("*.wav"))]
    y = np.concatenate(parts)
    return np.tile(y, int(np.ceil(45 * 16000 / len(y))))[: 45 * 16000]


@pytest.mark.parametrize("parts", [2, 3])
def test_pieces_give_the_one_pass_rows_bit_for_bit(speech_45s, parts, monkeypatch):
    monkeypatch.setattr(fp, "MIN_PIECE_S", 10.0)  # three pieces of 15 s in 45 s of speech
    cfg = EmotionConfig()
    one = emotion_rows(speech_45s, 16000, cfg)
    assert len(plan(len(speech_45s), 16000, cfg.context_s, cfg.hop_s, parts)) == parts
    with ThreadPoolExecutor(parts) as pool:
        got = emotion_rows(speech_45s, 16000, cfg, Workers(parts, pool.map))
    np.testing.assert_array_equal(got.values, one.values)
    np.testing.assert_array_equal(got.ends, one.ends)
    np.testing.assert_array_equal(got.index, one.index)


@pytest.mark.parametrize("parts", [2, 3])
def test_pieces_of_listed_rows_give_the_one_pass_rows_bit_for_bit(speech_45s, parts, monkeypatch):
    """The rows a 30 fps grid reads: each piece computes its own and the rows it is compared on."""
    monkeypatch.setattr(fp, "MIN_PIECE_S", 10.0)
    cfg = EmotionConfig()
    one = emotion_rows(speech_45s, 16000, cfg)
    R = len(one.index)
    frames = np.arange(R) * 10 // 3
    rows = np.unique(np.r_[frames, frames + 1, np.arange(R - 10, R + 20)])
    verdicts = []
    real = fp.stitch
    monkeypatch.setattr(fp, "stitch", lambda pieces, got: verdicts.append(real(pieces, got)) or verdicts[-1])
    with ThreadPoolExecutor(parts) as pool:
        got = emotion_rows(speech_45s, 16000, cfg, Workers(parts, pool.map), rows)
    assert verdicts[0] is not None  # stitched, not computed again in one pass
    want = rows[rows < R]
    np.testing.assert_array_equal(got.index, want)
    np.testing.assert_array_equal(got.values, one.values[want])
    np.testing.assert_array_equal(got.ends, one.ends[want])


def test_pieces_that_disagree_fall_back_to_one_pass(speech_45s, monkeypatch):
    """Without a warm-up a piece's first rows see where its audio began: the boundary check
    catches it and the file is computed in one pass."""
    cfg = EmotionConfig()
    one = emotion_rows(speech_45s, 16000, cfg)
    monkeypatch.setattr(fp, "WARM_UP_S", 0.0)
    verdicts = []
    real = fp.stitch
    monkeypatch.setattr(fp, "stitch", lambda pieces, got: verdicts.append(real(pieces, got)) or verdicts[-1])
    got = emotion_rows(speech_45s, 16000, cfg, Workers(2))
    assert verdicts == [None]
    np.testing.assert_array_equal(got.values, one.values)
    np.testing.assert_array_equal(got.ends, one.ends)
    np.testing.assert_array_equal(got.index, one.index)
