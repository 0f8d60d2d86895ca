"""How far a stage is and how long it still takes, as one line the same on every trainer, or a live bar.

    pretrain  step 300/600 (50%)  0:00:47 elapsed, ETA 0:00:47  1,180 img/s  loss 5.94  kNN top-1 61.2%

Off a terminal (CI, SLURM, Colab's log) a stage prints such a line at each report; on a terminal it is a tqdm bar
that moves every step and shows the same fields after the rate. Only process 0 shows either (runtime.console).
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from typing import Any

import jax

from genscl_jax.runtime import console

# The metrics a progress line shows after the rate, in this order: (metric key, format). A field appears when the
# stage's metrics carry its key (a trainer's step metrics or its latest evaluation's); one entry here shows a new
# metric on every trainer's line and bar.
FIELDS: list[tuple[str, str]] = [
    ("loss", "loss {:#.3g}"),
    ("knn_top1", "kNN top-1 {:.1%}"),
    ("probe_top1", "probe top-1 {:.1%}"),
    ("test_top1", "test top-1 {:.1%}"),
    ("linear_eval_top1", "test top-1 {:.1%}"),
    # Near 100%: the host input pipeline is the bottleneck (input_wait.py).
    ("input_wait_share", "input wait {:.0%}"),
]


def metric_fields(metrics: dict[str, float]) -> list[str]:
    """FIELDS present in `metrics`, formatted."""
    return [form.format(metrics[key]) for key, form in FIELDS if metrics.get(key) is not None]


def duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


def progress_line(stage: str, done: int, total: int, *, elapsed: float, per_second: float,
                  examples_per_second: float, metrics: dict[str, float], unit: str = "step") -> str:
    """`stage  step 300/600 (50%)  0:00:47 elapsed, ETA 0:00:47  1,180 img/s  loss 5.94` (FIELDS after the rate).

    `per_second` (units of `unit` per second) gives the ETA; 0 (not measured yet) reads "ETA unknown". The last
    line (done == total) has no ETA."""
    percent = int(100 * done / total) if total else 100
    timing = f"{duration(elapsed)} elapsed"
    if done < total:
        timing += ", ETA " + (duration((total - done) / per_second) if per_second > 0 else "unknown")
    parts = [stage, f"{unit} {done:,}/{total:,} ({percent}%)", timing]
    if examples_per_second > 0:
        parts.append(f"{examples_per_second:,.0f} img/s")
    return "  ".join(parts + metric_fields(metrics))


class Throughput:
    """Units (steps, or images) per second since the end of the first unit, whose time includes compilation."""

    def __init__(self, examples_per_unit: int = 1):
        self.examples_per_unit = examples_per_unit
        self.started = None
        self.units = 0

    def done(self, count: int = 1, sync: Any = None) -> None:
        """`count` more units are done; the first call waits for `sync` (its outputs) and starts the clock."""
        if self.started is None:
            jax.block_until_ready(sync)
            self.started = time.time()
        else:
            self.units += count

    def per_second(self) -> float:
        if not self.units:
            return 0.0
        return self.units / max(time.time() - self.started, 1e-9)

    def images_per_second(self) -> float:
        return self.per_second() * self.examples_per_unit


def _terminal_columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


class StageProgress:
    """One stage's progress on process 0: a live bar on a terminal, else a progress_line at each `report`.

    `advance(done)` every step moves the bar; `report(done, metrics)` prints the line (or refreshes the bar's
    fields); `tick(done)` is `advance` with a line now and then; `close()` ends the bar. `done` counts from 0 for
    the whole stage, also when it resumes at `start`.
    """

    def __init__(self, stage: str, total: int, throughput: Throughput, *, start: int = 0, unit: str = "step"):
        self.stage, self.total, self.throughput, self.unit = stage, total, throughput, unit
        self.started = self._reported = time.time()
        self._bar = None
        if console.live() and console.is_primary():
            from tqdm import tqdm
            # A terminal that reports no size (a pseudo-terminal nobody sized) gets 100 x 24: tqdm draws nothing on 0.
            sized = _terminal_columns() > 0
            self._bar = tqdm(total=total, initial=start, desc=stage, unit=unit, file=sys.stderr, dynamic_ncols=sized,
                             ncols=None if sized else 100, nrows=None if sized else 24, smoothing=0.1, leave=True)
        self._shown = start

    def advance(self, done: int) -> None:
        if self._bar is not None and done > self._shown:
            self._bar.update(done - self._shown)
            self._shown = done

    def report(self, done: int, metrics: dict[str, float]) -> None:
        self.advance(done)
        self._reported = time.time()
        images = self.throughput.images_per_second()
        if self._bar is not None:
            rate = [f"{images:,.0f} img/s"] if images > 0 else []
            self._bar.set_postfix_str(", ".join(rate + metric_fields(metrics)))
            return
        if console.is_primary():
            console.say(progress_line(self.stage, done, self.total, elapsed=time.time() - self.started,
                                      per_second=self.throughput.per_second(), examples_per_second=images,
                                      metrics=metrics, unit=self.unit))

    def tick(self, done: int, every_secs: float = 30.0) -> None:
        """`advance`, plus a plain line when `every_secs` passed since the last: for stages without log steps."""
        if self._bar is None and time.time() - self._reported >= every_secs:
            self.report(done, {})
        self.advance(done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
