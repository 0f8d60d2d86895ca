"""Where the time goes: the share of the training loop's wall time spent waiting for the input pipeline.

The loop times each next(batches) on the host. Steps are dispatched asynchronously, so the rest of the time is the
device's; it is only known where the loop blocks on the device anyway, at a log step. A window runs from one
such point to the next, and its share is waited / elapsed: near 1 the host pipeline is the bottleneck (the device
idles while the host reads and augments), near 0 the device is. Nothing here blocks on the device.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator


class InputWait:
    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._window_start: float | None = None
        self._waited = 0.0  # in this window
        self._batches = 0  # in this window
        self._total_waited = 0.0  # over closed windows
        self._total_elapsed = 0.0

    @property
    def started(self) -> bool:
        return self._window_start is not None

    def next_batch(self, batches: Iterator[Any]) -> Any:
        """next(batches), timed."""
        start = self._clock()
        batch = next(batches)
        self._waited += self._clock() - start
        self._batches += 1
        return batch

    def restart(self) -> None:
        """Opens a window; call it where the device has caught up with the host (after a blocking log step)."""
        self._window_start, self._waited, self._batches = self._clock(), 0.0, 0

    def close_window(self) -> dict[str, float]:
        """{"input_wait_share": waited / elapsed} of the window now ending ({} if it holds no batch); call it right
        after the loop has blocked on the device."""
        if self._window_start is None or not self._batches:
            return {}
        elapsed = max(self._clock() - self._window_start, 1e-9)
        self._total_waited += self._waited
        self._total_elapsed += elapsed
        return {"input_wait_share": min(self._waited / elapsed, 1.0)}

    def run_share(self) -> float | None:
        """The share over every closed window of this run (None before the first)."""
        if not self._total_elapsed:
            return None
        return min(self._total_waited / self._total_elapsed, 1.0)
