"""Window streaming: coverage, order, resets and window contents against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.train.streaming import FileRef, Normalizer, StreamSchedule, WindowStream, plan_epoch
from blendsync.train.windows import cut, frame_mask, pad_frames, window_span
from tests.train.conftest import make_random_store


@settings(max_examples=120, deadline=None)
@given(
    frames=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=12),
    streams=st.integers(min_value=1, max_value=6),
    stride=st.integers(min_value=1, max_value=5),
    seed=st.integers(0, 100),
    epoch=st.integers(0, 5),
    split=st.booleans(),
)
def test_schedule_visits_every_target_once_in_time_order_with_resets_at_segment_starts(
        frames, streams, stride, seed, epoch, split):
    per = plan_epoch(frames, streams, stride, seed, epoch, split=split)
    segments = [seg for row in per for seg in row]
    sched = StreamSchedule.build(per, stride)
    windows = sum(-(-T // stride) for T in frames)
    if split:
        # Every stream busy to the end: as few steps as the windows allow, at most
        # streams - 1 files cut in two.
        assert sched.steps == -(-windows // streams)
        assert len(segments) <= len(frames) + streams - 1
    else:
        # Whole files, each from its first window to its last.
        assert sorted(f for f, _, _ in segments) == list(range(len(frames)))
        assert all(a == 0 and b == -(-frames[f] // stride) for f, a, b in segments)
    visits = {}
    for i in range(streams):
        row_f, row_k, row_s = sched.file[i], sched.frame[i], sched.start[i]
        active = row_f >= 0
        # Idle steps only at the end of a stream.
        assert not np.any(active[np.argmin(active):]) or active.all()
        last = (-1, -1)
        for t in np.flatnonzero(active):
            f, k = int(row_f[t]), int(row_k[t])
            visits[(f, k)] = visits.get((f, k), 0) + 1
            if not row_s[t]:
                assert (f, k) == (last[0], last[1] + stride)  # time order inside a segment
            else:
                assert split or k == 0  # whole files start at their first frame
            last = (f, k)
    want = {(f, k): 1 for f, T in enumerate(frames) for k in range(0, T, stride)}
    assert visits == want


def test_few_long_files_keep_every_stream_busy():
    """Two long takes, eight streams: all eight rows work (a quarter of the steps of one row
    per take), and validation still walks each take whole."""
    frames = [3000, 2000]
    train = StreamSchedule.build(plan_epoch(frames, 8, 2, 0, 0), 2)
    assert train.steps == 313 and (train.file >= 0).sum(axis=1).tolist() == [313] * 7 + [309]
    val = StreamSchedule.build(plan_epoch(frames, 8, 1, 0, 0, shuffle=False, split=False), 1)
    assert val.steps == 3000 and (val.file[2:] == -1).all()


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 80), L=st.integers(1, 40), la_frac=st.floats(0, 0.99), k_frac=st.floats(0, 0.999))
def test_window_is_the_brute_force_slice(T, L, la_frac, k_frac):
    la = int(la_frac * L)
    k = int(k_frac * T)
    arr = np.arange(T * 2, dtype=np.float32).reshape(T, 2)
    padded = pad_frames(arr, L, la, pad_value=-1.0)
    mask = frame_mask(T, L, la)
    win, m = cut(padded, k, L), cut(mask, k, L)
    a, b = window_span(k, L, la)
    for j, frame in enumerate(range(a, b)):
        if 0 <= frame < T:
            assert m[j] and (win[j] == arr[frame]).all()
        else:
            assert not m[j] and (win[j] == -1.0).all()
    assert np.shares_memory(win, padded)  # a view, not a copy
    assert win[L - 1 - la][0] == arr[k][0]  # the target frame sits lookahead from the end


def _norm():
    z = np.zeros
    o = np.ones
    return Normalizer(z(80, np.float32), o(80, np.float32), z(88, np.float32), o(88, np.float32), z(5, np.float32))


@pytest.mark.parametrize("stride", [1, 3])
def test_batches_from_a_real_store_match_brute_force(tmp_path, stride):
    lengths = [5, 40, 23, 70, 1]  # some shorter than the window
    fs, keys = make_random_store(tmp_path / "s.zarr", lengths)
    files = [FileRef(k, T, k) for k, T in zip(keys, lengths)]
    L, la = 16, 3
    ws = WindowStream(fs, files, _norm(), window=L, lookahead=la, stride=stride, streams=3, seed=1)
    items = {i: fs.read_item(k) for i, k in enumerate(keys)}
    seen = []
    prev_row = {}
    batches = list(ws.epoch(2))
    for t, b in enumerate(batches):
        assert b["mel"].shape == (3, L, 80) and b["target"].shape == (3, 5)
        for i in range(3):
            if not b["valid"][i]:
                assert b["file"][i] == -1 and b["frame_mask"][i].all()
                continue
            f, k = int(b["file"][i]), int(b["frame"][i])
            it = items[f]
            seen.append((f, k))
            a, e = window_span(k, L, la)
            for j, frame in enumerate(range(a, e)):
                inside = 0 <= frame < lengths[f]
                assert b["frame_mask"][i, j] == inside
                if inside:
                    np.testing.assert_array_equal(b["mel"][i, j], it.mel[frame])
                    np.testing.assert_array_equal(b["emotion"][i, j], it.emotion[frame])
            np.testing.assert_array_equal(b["target"][i], it.targets[k])
            # No previous frame at a segment's first window; otherwise the one a stride back.
            assert b["has_prev"][i] == (seen.count((f, k - stride)) == 1 and k >= stride
                                        and prev_row.get(i) == (f, k - stride))
            if b["has_prev"][i]:
                np.testing.assert_array_equal(b["prev_target"][i], it.targets[k - stride])
            prev_row[i] = (f, k)
    assert sorted(seen) == sorted((f, k) for f, T in enumerate(lengths) for k in range(0, T, stride))
    # Restarting mid-epoch gives the same remaining batches.
    rest = list(ws.epoch(2, start_step=4))
    for a, b in zip(batches[4:], rest):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    # Another epoch shuffles file order, not frames within files.
    other = [(int(b["file"][0]), int(b["frame"][0])) for b in ws.epoch(3) if b["valid"][0]]
    assert other and all(k == 0 or (f, k - stride) in other for f, k in other)
