"""The cosine's length: a run's epochs' steps up to max_steps, without planning epochs past it."""

from __future__ import annotations

from blendsync.train.loop.trainer import _schedule_length


class CountingStream:
    """steps(epoch) -> steps_per_epoch; counts the epochs planned."""

    def __init__(self, steps_per_epoch: int) -> None:
        self.per_epoch, self.planned = steps_per_epoch, 0

    def steps(self, epoch: int) -> int:
        self.planned += 1
        return self.per_epoch


def test_epochs_alone_set_the_length():
    assert _schedule_length(CountingStream(7), epochs=10, max_steps=0) == 70


def test_max_steps_ends_it_and_no_later_epoch_is_planned():
    s = CountingStream(7)
    assert _schedule_length(s, epochs=100_000, max_steps=50) == 50
    assert s.planned == 8  # 8 epochs of 7 steps reach 50


def test_max_steps_past_the_epochs_leaves_the_epochs_length():
    assert _schedule_length(CountingStream(7), epochs=3, max_steps=50) == 21
