"""A budget of process CPU seconds for bstrain fit's on_step hook, shared by the learning
benchmarks: time.process_time() counts every thread of this process and is not inflated by
other load on a shared machine the way wall time is."""

from __future__ import annotations

import time
from collections.abc import Callable


class CpuBudget:
    """CPU seconds charged so far across the fit calls of one run; until(mark) is the
    on_step hook that ends a fit once the total reaches mark. Charged: from the hook's
    creation (the fit's setup) to each step's end; what runs between fit calls (scoring)
    is not."""

    def __init__(self) -> None:
        self.used = 0.0

    def until(self, mark: float) -> Callable[[dict], bool]:
        last = time.process_time()

        def on_step(rec: dict) -> bool:
            nonlocal last
            now = time.process_time()
            self.used += now - last
            last = now
            return self.used >= mark

        return on_step
