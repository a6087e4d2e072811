"""Window streaming: coverage, order, resets and window contents against brute force, for
one frame per window and for blocks of K frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.train.core.data import FileRef
from blendsync.train.core.normalization import Normalizer
from blendsync.train.core.windows import (
    block_positions,
    block_starts,
    block_step,
    cut,
    frame_mask,
    n_blocks,
    pad_frames,
    prev_offset,
    target_frames,
    window_span,
)
from blendsync.train.loop.streaming import StreamSchedule, WindowStream, plan_epoch
from tests.helpers import make_random_store


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=12),
    streams=st.integers(min_value=1, max_value=6),
    stride=st.integers(min_value=1, max_value=5),
    block=st.sampled_from([1, 1, 2, 3, 7, 16, 64]),
    seed=st.integers(0, 100),
    epoch=st.integers(0, 5),
    split=st.booleans(),
)
def test_schedule_visits_every_target_frame_once_in_time_order_with_resets_at_segment_starts(
    frames, streams, stride, block, seed, epoch, split
):
    per = plan_epoch(frames, streams, stride, seed, epoch, split=split, block=block)
    segments = [seg for row in per for seg in row]
    step = block_step(block, stride)
    sched = StreamSchedule.build(per, frames, block, stride)
    blocks = sum(n_blocks(T, block, stride) for T in frames)
    if split:
        # Every stream busy to the end: as few steps as the blocks allow, at most
        # streams - 1 files cut in two.
        assert sched.steps == -(-blocks // streams)
        assert len(segments) <= len(frames) + streams - 1
    else:
        # Whole files, each from its first block to its last.
        assert sorted(f for f, _, _ in segments) == list(range(len(frames)))
        assert all(a == 0 and b == n_blocks(frames[f], block, stride) for f, a, b in segments)
    visits = {}
    for i in range(streams):
        row_f, row_k, row_s = sched.file[i], sched.frame[i], sched.start[i]
        active = row_f >= 0
        # Idle steps only at the end of a stream.
        assert not np.any(active[np.argmin(active) :]) or active.all()
        last = (-1, -1)
        for t in np.flatnonzero(active):
            f, k = int(row_f[t]), int(row_k[t])
            assert k < frames[f]  # a block starts inside its file (it may end past it: masked)
            for frame in range(k, min(k + block, frames[f])):
                visits[(f, frame)] = visits.get((f, frame), 0) + 1
            if not row_s[t]:
                assert (f, k) == (last[0], last[1] + step)  # time order inside a segment
            else:
                assert split or k == 0  # whole files start at their first frame
            last = (f, k)
    # At stride 1 every frame of every file exactly once; at stride s the first K of every
    # K*s frames.
    want = {(f, int(k)): 1 for f, T in enumerate(frames) for k in target_frames(T, block, stride)}
    assert visits == want
    if stride == 1:
        assert len(want) == sum(frames)


def test_few_long_files_keep_every_stream_busy():
    """Two long takes, eight streams: all eight rows work (a quarter of the steps of one row
    per take), and validation still walks each take whole."""
    frames = [3000, 2000]
    train = StreamSchedule.build(plan_epoch(frames, 8, 2, 0, 0), frames, 1, 2)
    assert train.steps == 313 and (train.file >= 0).sum(axis=1).tolist() == [313] * 7 + [309]
    val = StreamSchedule.build(plan_epoch(frames, 8, 1, 0, 0, shuffle=False, split=False), frames)
    assert val.steps == 3000 and (val.file[2:] == -1).all()


@settings(max_examples=100, deadline=None)
@given(
    T=st.integers(1, 80),
    L=st.integers(1, 40),
    la_frac=st.floats(0, 0.99),
    k_frac=st.floats(0, 0.999),
    block_frac=st.floats(0, 1),
)
def test_window_is_the_brute_force_slice(T, L, la_frac, k_frac, block_frac):
    la = int(la_frac * L)
    K = 1 + int(block_frac * (L - la - 1))  # 1 <= K <= L - la
    k = int(k_frac * T)  # the block's first frame
    arr = np.arange(T * 2, dtype=np.float32).reshape(T, 2)
    padded = pad_frames(arr, L, la, pad_value=-1.0, block=K)
    mask = frame_mask(T, L, la, block=K)
    assert padded.shape[0] == T + L - 1  # whatever K
    win, m = cut(padded, k, L), cut(mask, k, L)
    a, b = window_span(k, L, la, K)
    assert b - a == L
    for j, frame in enumerate(range(a, b)):
        if 0 <= frame < T:
            assert m[j] and (win[j] == arr[frame]).all()
        else:
            assert not m[j] and (win[j] == -1.0).all()
    assert np.shares_memory(win, padded)  # a view, not a copy
    p0, p1 = block_positions(L, la, K)
    assert p1 - p0 == K and p1 == L - la  # the block's last frame sits lookahead from the end
    assert win[p0][0] == arr[k][0]  # its first frame is the block's first frame


def _norm():
    z = np.zeros
    o = np.ones
    return Normalizer(
        mel_mean=z(80, np.float32),
        mel_std=o(80, np.float32),
        emotion_mean=z(88, np.float32),
        emotion_std=o(88, np.float32),
        target_mean=z(5, np.float32),
    )


@pytest.mark.parametrize("stride, block", [(1, 1), (3, 1), (1, 5), (2, 4), (1, 13)])
def test_batches_from_a_real_store_match_brute_force(tmp_path, stride, block):
    lengths = [5, 40, 23, 70, 1]  # some shorter than the window, some than a block
    fs, keys = make_random_store(tmp_path / "s.zarr", lengths)
    files = [FileRef(k, T, k) for k, T in zip(keys, lengths)]
    L, la, K = 16, 3, block
    step = block_step(K, stride)
    ws = WindowStream(fs, files, _norm(), window=L, lookahead=la, stride=stride, streams=3, block=K, seed=1)
    items = {i: fs.read_item(k) for i, k in enumerate(keys)}
    seen = []
    prev_row = {}
    batches = list(ws.epoch(2))
    for b in batches:
        assert b["mel"].shape == (3, L, 80) and b["target"].shape == (3, K, 5) and b["valid"].shape == (3, K)
        for i in range(3):
            if not b["active"][i]:
                assert b["file"][i] == -1 and b["frame_mask"][i].all() and not b["valid"][i].any()
                continue
            f, k = int(b["file"][i]), int(b["frame"][i])
            it = items[f]
            a, e = window_span(k, L, la, K)
            for j, frame in enumerate(range(a, e)):
                inside = 0 <= frame < lengths[f]
                assert b["frame_mask"][i, j] == inside
                if inside:
                    np.testing.assert_array_equal(b["mel"][i, j], it.mel[frame])
                    np.testing.assert_array_equal(b["emotion"][i, j], it.emotion[frame])
            for j in range(K):
                real = k + j < lengths[f]
                assert b["valid"][i, j] == real  # frames past the file's end are masked
                if real:
                    np.testing.assert_array_equal(b["target"][i, j], it.targets[k + j])
                    seen.append((f, k + j))
            # No previous frame at a segment's first block; otherwise the frame just before
            # the block, prev_offset frames back (stride frames at K = 1).
            lag = prev_offset(K, stride)
            assert b["has_prev"][i] == (k >= step and prev_row.get(i) == (f, k - step))
            if b["has_prev"][i]:
                np.testing.assert_array_equal(b["prev_target"][i], it.targets[k - lag])
            prev_row[i] = (f, k)
    want = sorted((f, int(k)) for f, T in enumerate(lengths) for k in target_frames(T, K, stride))
    assert sorted(seen) == want
    # Restarting mid-epoch gives the same remaining batches.
    rest = list(ws.epoch(2, start_step=4))
    for a, b in zip(batches[4:], rest):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    # Another epoch shuffles file order, not frames within files.
    other = [(int(b["file"][0]), int(b["frame"][0])) for b in ws.epoch(3) if b["active"][0]]
    assert other and all(k == 0 or (f, k - step) in other for f, k in other)


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=7),
    streams=st.integers(min_value=1, max_value=6),
    stride=st.integers(min_value=1, max_value=4),
    block=st.sampled_from([1, 2, 3, 7, 16]),
    data=st.data(),
    split=st.booleans(),
)
def test_shifted_grids_keep_every_target_once_in_time_order_with_prefix_masks(
    frames, streams, stride, block, data, split
):
    """With a phase per file the targets are the frames k with (k - p) mod K·s < K (every
    frame at stride 1); a head block predicts the targets before the first shifted block,
    and within a segment the frame before each block is prev_offset frames back."""
    step = block_step(block, stride)
    phases = [data.draw(st.integers(0, step - 1)) for _ in frames]
    per = plan_epoch(frames, streams, stride, 3, 1, split=split, block=block, phases=phases)
    sched = StreamSchedule.build(per, frames, block, stride, phases)
    visits: dict = {}
    for i in range(streams):
        last = None
        for t in np.flatnonzero(sched.file[i] >= 0):
            f, k, stop = int(sched.file[i, t]), int(sched.frame[i, t]), int(sched.stop[i, t])
            assert 0 <= k < stop <= frames[f] and stop - k <= block
            for frame in range(k, stop):  # the block's targets: a prefix of it
                visits[(f, frame)] = visits.get((f, frame), 0) + 1
            if not sched.start[i, t]:
                lf, lstop = last
                assert lf == f and lstop - 1 == k - prev_offset(block, stride)
            last = (f, stop)
    want = {(f, int(k)): 1 for f, T in enumerate(frames) for k in target_frames(T, block, stride, phases[f])}
    assert visits == want
    if stride == 1:
        assert len(want) == sum(frames)
    assert sum(n_blocks(T, block, stride, p) for T, p in zip(frames, phases)) == sum(
        len(block_starts(T, block, stride, p)[0]) for T, p in zip(frames, phases)
    )


def test_jitter_cuts_a_take_into_other_windows_each_epoch_and_is_reproducible(tmp_path):
    fs, keys = make_random_store(tmp_path / "s.zarr", [300, 200], channels=3, seed=2)
    files = [FileRef(k, T, k) for k, T in zip(keys, [300, 200])]
    norm = Normalizer(
        mel_mean=np.zeros(80, np.float32),
        mel_std=np.ones(80, np.float32),
        emotion_mean=np.zeros(88, np.float32),
        emotion_std=np.ones(88, np.float32),
        target_mean=np.zeros(3, np.float32),
    )
    kw = dict(window=48, lookahead=4, stride=1, streams=2, block=32, seed=5)
    ws = WindowStream(fs, files, norm, jitter=True, **kw)
    firsts = {
        e: sorted({(int(b["file"][i]), int(b["frame"][i])) for b in ws.epoch(e) for i in np.flatnonzero(b["active"])})
        for e in range(4)
    }
    assert len({tuple(v) for v in firsts.values()}) > 1  # the windows move between epochs
    assert ws.phases(2) == WindowStream(fs, files, norm, jitter=True, **kw).phases(2)  # seeded
    assert WindowStream(fs, files, norm, **kw).phases(2) == [0, 0]  # validation: no shift
    for e in range(4):  # every frame once per epoch, whatever the phase
        seen = sorted(
            (int(b["file"][i]), int(b["frame"][i]) + j)
            for b in ws.epoch(e)
            for i in np.flatnonzero(b["active"])
            for j in np.flatnonzero(b["valid"][i])
        )
        assert seen == [(f, k) for f, T in enumerate([300, 200]) for k in range(T)]


def test_more_streams_than_windows_are_capped_with_a_warning(tmp_path, caplog):
    import logging

    from blendsync.train.loop.trainer import fit
    from tests.helpers import tiny

    # Two items split by hash: one trains (3 windows of 128 frames), one validates.
    fs, _ = make_random_store(tmp_path / "s.zarr", [300, 280])
    with caplog.at_level(logging.WARNING):
        r = fit(
            fs.root,
            cfg=tiny(stream={"batch_streams": 64}, validation={"holdout_tail": 0}),
            out=tmp_path / "run",
            stop_after_steps=1,
        )
    assert "64 streams (stream.batch_streams) but an epoch has only 3 windows: using 3 streams" in caplog.text
    cfg = json.loads((r.run_dir / "config.json").read_text())["train_config"]
    assert cfg["stream"]["batch_streams"] == 3
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fit(
            fs.root,
            cfg=tiny(stream={"batch_streams": 3}, validation={"holdout_tail": 0}),
            out=tmp_path / "r2",
            stop_after_steps=1,
        )
    assert "stream.batch_streams" not in caplog.text


def test_the_stream_cursor_owns_the_position_and_round_trips(tmp_path):
    import torch

    from blendsync.train.loop.streaming import StreamCursor

    fs, keys = make_random_store(tmp_path / "s.zarr", [300, 280, 200])
    files = [FileRef(k, n, k) for k, n in zip(keys, (300, 280, 200))]
    norm = Normalizer(
        mel_mean=np.zeros(80, np.float32),
        mel_std=np.ones(80, np.float32),
        emotion_mean=np.zeros(88, np.float32),
        emotion_std=np.ones(88, np.float32),
        target_mean=np.zeros(5, np.float32),
    )
    ws = WindowStream(fs, files, norm, window=160, lookahead=6, stride=1, streams=2, block=32)
    cur = StreamCursor(ws, torch.zeros(2, 5))
    first = [b["frame"].copy() for b in cur.batches()][:3]
    for _ in range(3):
        cur.advance(cur.prev + 1)
    state = cur.state_dict()
    assert (state["epoch"], state["step_in_epoch"]) == (0, 3) and float(state["prev"][0, 0]) == 3.0
    again = StreamCursor(ws, torch.zeros(2, 5))
    again.load_state_dict(state)
    # It continues with the batch after the three trained on.
    rest = [b["frame"] for b in again.batches()]
    assert len(rest) == ws.steps(0) - 3 and not np.array_equal(rest[0], first[0])
    while not again.epoch_done:
        again.advance(again.prev)
    again.next_epoch()
    assert (again.epoch, again.step_in_epoch) == (1, 0) and float(again.prev.abs().sum()) == 0.0
