"""Stream windows from a feature store in file order into B parallel streams.

Row i of every batch belongs to stream i, which walks its own segments (files, or parts of
files: see plan_epoch) block after block in time order and keeps its own previous
prediction (held by the trainer). One window predicts a block of K frames (windows.py);
blocks step by K·stride frames. File order is shuffled per epoch with a seed, never the
order inside a file; with jitter (training) each file's block grid is also shifted by a
seeded phase per epoch (windows.block_starts), so a take's windows differ from epoch to
epoch. Files are read whole (a few large reads) by background threads ahead
of the model and cut into windows as views.

Batch arrays (B streams, L window frames, K block frames, M mel bins, E = 88, C channels):
    mel        (B, L, M) float32   standardised log-mel
    emotion    (B, L, E) float32   standardised eGeMAPS
    frame_mask (B, L)    bool      True where a real frame (False: padding beyond a file edge;
                                   idle rows are all True so attention stays finite)
    target     (B, K, C) float32   targets of the block's frames f … f + K - 1 (0 past the file)
    valid      (B, K)    bool      True where a block frame is a target of an active row (a prefix
                                   of the block: a file's end, or a head block's end, masks the rest)
    active     (B,)      bool      False for streams that ran out of blocks (last batches)
    prev_target(B, C)    float32   targets at the frame before the block, f - windows.prev_offset
                                   (zeros where has_prev is False)
    has_prev   (B,)      bool      False on a stream's first block of a segment (state reset)
    file       (B,)      int64     index of the file in the stream set (-1 when not active)
    frame      (B,)      int64     the block's first frame f, counted from the FileRef's start
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from blendsync.shared.store import FeatureStore
from blendsync.train.core.data import FileRef, read_checked
from blendsync.train.core.windows import block_starts, block_step, cut, frame_mask, n_blocks, pad_frames, prev_offset

if TYPE_CHECKING:
    import torch

    from blendsync.train.core.normalization import Normalizer

log = logging.getLogger(__name__)


Segment = tuple[int, int, int]
"""(file, first block, stop block): a run of one file's blocks, walked in time order."""


def plan_epoch(
    frames: list[int],
    streams: int,
    stride: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    split: bool = True,
    block: int = 1,
    phases: list[int] | None = None,
) -> list[list[Segment]]:
    """The segments each stream walks, in order (in units of blocks of `block` frames).

    split=True (training): the files' blocks, in a seeded per-epoch file order, are laid end
    to end and cut into `streams` runs of ceil(W / streams) blocks. Every stream is busy
    until the last step, whatever the number and lengths of the files (a few long takes keep
    all B rows working, not one row per take), at the cost of at most streams - 1 files cut
    in two: the second part starts with a state reset, like a new file.
    split=False (validation): whole files go, one by one, to the stream with the fewest
    blocks so far, so each file is walked start to end with its state carried, as predict
    does; streams end within about one file of each other.
    """
    order = np.arange(len(frames))
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(len(frames))
    out: list[list[Segment]] = [[] for _ in range(streams)]
    counts = [n_blocks(frames[f], block, stride, phases[f] if phases is not None else 0) for f in order]
    if not split:
        load = [0] * streams
        for f, n in zip(order, counts):
            i = int(np.argmin(load))
            out[i].append((int(f), 0, n))
            load[i] += n
        return out
    per = -(-sum(counts) // streams)
    i, room = 0, per
    for f, n in zip(order, counts):
        a = 0
        while a < n:
            take = min(room, n - a)
            out[i].append((int(f), a, a + take))
            a += take
            room -= take
            if room == 0 and i < streams - 1:
                i, room = i + 1, per
    return out


@dataclass(frozen=True)
class StreamSchedule:
    """(file, first frame of the block, end of its real targets) of every stream at every
    step: arrays (streams, steps), file -1 = idle; start (streams, steps) bool, True where a
    stream begins a segment (state reset)."""

    file: np.ndarray
    frame: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    @property
    def steps(self) -> int:
        return int(self.file.shape[1])

    def rows(self, sl: slice) -> StreamSchedule:
        return StreamSchedule(self.file[sl], self.frame[sl], self.start[sl], self.stop[sl])

    @classmethod
    def build(
        cls,
        per_stream: list[list[Segment]],
        frames: list[int],
        block: int = 1,
        stride: int = 1,
        phases: list[int] | None = None,
    ) -> StreamSchedule:
        """frames: each file's frame count; phases: each file's grid phase (windows.block_starts)."""
        grid = {}
        for segs in per_stream:
            for f, _, _ in segs:
                if f not in grid:
                    grid[f] = block_starts(frames[f], block, stride, phases[f] if phases is not None else 0)
        seqs = []
        for segs in per_stream:
            fs = [np.full(b - a, f, dtype=np.int64) for f, a, b in segs]
            ks = [grid[f][0][a:b] for f, a, b in segs]
            ends = [grid[f][1][a:b] for f, a, b in segs]
            st = [np.arange(b - a) == 0 for f, a, b in segs]
            seqs.append((_concat(fs, np.int64), _concat(ks, np.int64), _concat(st, bool), _concat(ends, np.int64)))
        steps = max((len(q[0]) for q in seqs), default=0)
        file = np.full((len(seqs), steps), -1, dtype=np.int64)
        frame = np.zeros((len(seqs), steps), dtype=np.int64)
        start = np.zeros((len(seqs), steps), dtype=bool)
        stop = np.zeros((len(seqs), steps), dtype=np.int64)
        for i, (f, k, st, e) in enumerate(seqs):
            file[i, : len(f)] = f
            frame[i, : len(k)] = k
            start[i, : len(st)] = st
            stop[i, : len(e)] = e
        return cls(file, frame, start, stop)


@dataclass
class LoadedFile:
    """Padded, standardised arrays of one file: mel (T+L-1, M), emotion (T+L-1, E),
    mask (T+L-1,), targets (T+K-1, C) with zeros past the file's end."""

    mel: np.ndarray
    emotion: np.ndarray
    mask: np.ndarray
    targets: np.ndarray


class WindowStream:
    """Iterate batches of one epoch over `files`; restartable at any step (for --resume)."""

    def __init__(
        self,
        store: FeatureStore,
        files: list[FileRef],
        norm: Normalizer,
        *,
        window: int,
        lookahead: int,
        stride: int,
        streams: int,
        block: int = 1,
        pad_value: float = 0.0,
        prefetch: int = 4,
        seed: int = 0,
        shuffle: bool = True,
        split: bool = True,
        rank: int = 0,
        world: int = 1,
        jitter: bool = False,
        teacher_targets: dict[str, np.ndarray] | None = None,
        variants: dict[int, list[FileRef]] | None = None,
        variant_p: float = 0.0,
    ):
        """teacher_targets: {item key: (frames, C)} curves of audio-only items among `files`
        (train.loop.teacher), read where an item holds no targets of its own. files[0] must
        hold its own (its arrays give the widths). variants: {index in files: stored audio
        variants of that file (bsfeat extract --augment), their ranges scaled to the file's};
        each epoch walks one of them instead of the file with probability variant_p, drawn
        per file and epoch from the seed (a take is walked whole, in time order, with its
        state carried, so the choice is per take, not per window)."""
        if not files:
            raise ValueError("no files to stream")
        self.variants = {i: list(v) for i, v in (variants or {}).items() if v}
        self.variant_p = float(variant_p)
        self._walked: tuple[int, list[FileRef]] | None = None
        self.teacher_targets = teacher_targets or {}
        self.store, self.files, self.norm = store, files, norm
        self.window, self.lookahead, self.stride, self.block = window, lookahead, stride, block
        self.streams, self.pad_value, self.prefetch = streams, pad_value, max(1, prefetch)
        self.seed, self.shuffle, self.split, self.jitter = seed, shuffle, split, jitter
        self.rank, self.world = rank, world
        # Array widths, known before any file is read (a rank may start with idle rows only).
        self.dims = {k: int(v[1]) for k, v in store.item_attrs(files[0].key).shapes.items()}

    def walked(self, epoch: int) -> list[FileRef]:
        """The files this epoch walks: `files`, each replaced by one of its variants with
        probability variant_p (the same on every rank and after a resume)."""
        if not self.variants or self.variant_p <= 0:
            return self.files
        if self._walked is None or self._walked[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, 2])
            out = list(self.files)
            for i in sorted(self.variants):
                use, pick = rng.random(), rng.integers(len(self.variants[i]))
                if use < self.variant_p:
                    out[i] = self.variants[i][int(pick)]
            self._walked = (epoch, out)
        return self._walked[1]

    def schedule(self, epoch: int) -> StreamSchedule:
        """This rank's streams. Files are spread over world x streams slots at once, so every
        window is seen once per epoch across ranks and every rank runs the same number of
        steps (a rank out of windows runs idle rows instead of leaving the others waiting)."""
        phases = self.phases(epoch)
        frames = [f.frames for f in self.walked(epoch)]
        per = plan_epoch(
            frames,
            self.streams * self.world,
            self.stride,
            self.seed,
            epoch,
            self.shuffle,
            self.split,
            self.block,
            phases,
        )
        full = StreamSchedule.build(per, frames, self.block, self.stride, phases)
        return full.rows(slice(self.rank * self.streams, (self.rank + 1) * self.streams))

    def phases(self, epoch: int) -> list[int]:
        """Each file's block-grid phase this epoch: seeded random in [0, K·stride) with
        jitter (training), else 0."""
        if not self.jitter:
            return [0] * len(self.files)
        rng = np.random.default_rng([self.seed, epoch, 1])
        return rng.integers(0, block_step(self.block, self.stride), size=len(self.files)).tolist()

    def steps(self, epoch: int) -> int:
        return self.schedule(epoch).steps

    def load(self, ref: FileRef) -> LoadedFile:
        item = read_checked(self.store, ref)
        if item.targets is None and ref.key in self.teacher_targets:
            item = dataclasses.replace(item, targets=self.teacher_targets[ref.key])
        if item.targets is None:
            raise ValueError(f"item {ref.key} ({ref.id}) has no targets")
        n = self.norm
        mel = (item.mel - n.mel_mean) / n.mel_std
        emo = (item.emotion - n.emotion_mean) / n.emotion_std
        L, la, pv, K = self.window, self.lookahead, self.pad_value, self.block
        targets = np.zeros((item.targets.shape[0] + K - 1, item.targets.shape[1]), np.float32)
        targets[: item.targets.shape[0]] = item.targets
        return LoadedFile(
            pad_frames(mel.astype(np.float32), L, la, pv, K),
            pad_frames(emo.astype(np.float32), L, la, pv, K),
            frame_mask(item.mel.shape[0], L, la, K),
            targets,
        )

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Batches of one epoch from start_step on (see the module docstring for shapes)."""
        sched = self.schedule(epoch)
        files = self.walked(epoch)
        need = _first_and_last_use(sched, start_step)
        order = sorted(need, key=lambda f: need[f][0])
        rank = {f: r for r, f in enumerate(order)}
        # As many readers as files read ahead: on an object store a read is mostly waiting.
        pool = ThreadPoolExecutor(max_workers=self.prefetch, thread_name_prefix="bstrain-reader")
        futures: dict[int, Future] = {}
        first_use = [need[f][0] for f in order]
        nxt = 0

        def top_up(t: int, upto: int) -> None:
            """Submit every file needed now, then keep `prefetch` files read ahead of step t.
            Files in use do not count: a file cut across two streams stays in use from its
            second part's first step to its first part's last."""
            nonlocal nxt
            started = bisect.bisect_right(first_use, t)
            while nxt < len(order) and (nxt < upto or nxt - started < self.prefetch):
                f = order[nxt]
                futures[f] = pool.submit(self.load, files[f])
                nxt += 1

        try:
            for t in range(start_step, sched.steps):
                files_now = sched.file[:, t]
                needed = [f for f in set(files_now.tolist()) if f >= 0]
                top_up(t, max(rank[f] for f in needed) + 1 if needed else 0)
                batch = self._batch(sched, t, {f: futures[f].result() for f in needed}, files)
                yield batch
                for f in needed:
                    if need[f][1] == t:
                        futures.pop(f, None)
        finally:
            # Reads not started are dropped; one in flight finishes before the epoch ends, so no
            # reader thread outlives it (e.g. into a process's teardown).
            pool.shutdown(wait=True, cancel_futures=True)

    def _batch(
        self, sched: StreamSchedule, t: int, loaded: dict[int, LoadedFile], files: list[FileRef]
    ) -> dict[str, np.ndarray]:
        """Step t's batch: each active row's window and block cut from its loaded file."""
        B, L, K = self.streams, self.window, self.block
        M, E, C = self.dims.get("mel"), self.dims.get("emotion"), self.dims.get("targets")
        files_now = sched.file[:, t]
        batch = {
            # Every active row is overwritten below; only idle rows need the pad value.
            "mel": np.empty((B, L, M), np.float32),
            "emotion": np.empty((B, L, E), np.float32),
            # Idle rows see all frames (of padding): attention over no key at all is NaN.
            "frame_mask": np.ones((B, L), bool),
            "target": np.zeros((B, K, C), np.float32),
            "valid": np.zeros((B, K), bool),
            "active": np.zeros(B, bool),
            "prev_target": np.zeros((B, C), np.float32),
            "has_prev": np.zeros(B, bool),
            "file": files_now.copy(),
            "frame": sched.frame[:, t].copy(),
        }
        lag, offsets = prev_offset(K, self.stride), np.arange(K)
        for i in range(B):
            f = int(files_now[i])
            if f < 0:
                batch["mel"][i] = self.pad_value
                batch["emotion"][i] = self.pad_value
                continue
            k = int(sched.frame[i, t]) + files[f].start
            lf = loaded[f]
            batch["mel"][i] = cut(lf.mel, k, L)
            batch["emotion"][i] = cut(lf.emotion, k, L)
            batch["frame_mask"][i] = cut(lf.mask, k, L)
            batch["target"][i] = lf.targets[k : k + K]
            batch["valid"][i] = k + offsets < files[f].start + int(sched.stop[i, t])
            batch["active"][i] = True
            if not sched.start[i, t]:  # within a segment, the previous block came just before
                batch["has_prev"][i] = True
                batch["prev_target"][i] = lf.targets[k - lag]
        return batch


def _first_and_last_use(sched: StreamSchedule, start: int) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    files = sched.file[:, start:]
    for i in range(files.shape[0]):
        row = files[i]
        for f in np.unique(row[row >= 0]):
            idx = np.flatnonzero(row == f)
            a, b = int(idx[0]) + start, int(idx[-1]) + start
            if f in out:
                a, b = min(a, out[f][0]), max(b, out[f][1])
            out[int(f)] = (a, b)
    return out


class StreamCursor:
    """Where training stands in a WindowStream: the epoch, the batches of it already trained
    on, and each stream row's carried previous smoothed frame prev (B, C) on the device. It
    is the whole of what --resume needs from the stream (state_dict / load_state_dict), so
    the trainer keeps no position of its own."""

    def __init__(self, stream: WindowStream, prev: torch.Tensor):
        self.stream, self.prev = stream, prev
        self.epoch, self.step_in_epoch = 0, 0

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        """The rest of this epoch's batches; call advance() after training on each."""
        return self.stream.epoch(self.epoch, self.step_in_epoch)

    def advance(self, prev: torch.Tensor) -> None:
        self.step_in_epoch += 1
        self.prev = prev

    @property
    def epoch_done(self) -> bool:
        return self.step_in_epoch >= self.stream.steps(self.epoch)

    def next_epoch(self) -> None:
        """A new epoch starts every stream at a file's start: nothing carried over."""
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.prev = self.prev.new_zeros(self.prev.shape)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "prev": self.prev.detach()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.prev = state["prev"].to(self.prev.device)


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)
