"""What a run records: clu metric writers (TensorBoard; every metric on the console too with --verbose), clu's
steps/s, the parameter table (<workdir>/parameters.txt) and the final <workdir>/summary.json. Only process 0 writes
files. The console's own progress line is progress.py's.

TensorBoard events are a convenience: when they cannot be written (e.g. TensorFlow has no client for the workdir's
URL), the run warns once and goes on without them. Checkpoints and summary.json are never optional.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
from absl import logging

from genscl_jax.runtime import console, paths


def create_writer(workdir: str):
    """TensorBoard events in `workdir` from process 0, when they can be written; with --verbose every metric on the
    console too (clu's LoggingWriter, every process)."""
    from clu import metric_writers  # imports TensorFlow's summary writer: keep it off the benchmark path

    writers = [metric_writers.LoggingWriter()] if console.verbose() else []
    if jax.process_index() == 0:
        writers.append(_EventsWriter(workdir))
    return metric_writers.AsyncMultiWriter(writers)


class _EventsWriter:
    """clu's TensorBoard SummaryWriter, except that a failure (at creation or any later write) is one warning,
    after which events are dropped and the run continues."""

    def __init__(self, logdir: str):
        self.logdir = logdir
        self._writer = None
        self._call(self._open)

    def _open(self):
        from clu import metric_writers
        self._writer = metric_writers.SummaryWriter(logdir=self.logdir)

    def _call(self, method, *args, **kwargs):
        try:
            method(*args, **kwargs)
        except Exception as e:  # noqa: BLE001  (TensorFlow raises many kinds; none may stop the run)
            self._writer = None
            logging.warning("TensorBoard events cannot be written to %s, continuing without them (checkpoints and "
                            "summary.json are written as usual): %s: %s", self.logdir, type(e).__name__,
                            str(e).splitlines()[0][:300] if str(e) else "")

    def _forward(self, name, *args, **kwargs):
        if self._writer is not None:
            self._call(getattr(self._writer, name), *args, **kwargs)

    def write_summaries(self, step, values, metadata=None):
        self._forward("write_summaries", step, values, metadata)

    def write_scalars(self, step, scalars):
        self._forward("write_scalars", step, scalars)

    def write_images(self, step, images):
        self._forward("write_images", step, images)

    def write_videos(self, step, videos):
        self._forward("write_videos", step, videos)

    def write_audios(self, step, audios, *, sample_rate):
        self._forward("write_audios", step, audios, sample_rate=sample_rate)

    def write_texts(self, step, texts):
        self._forward("write_texts", step, texts)

    def write_histograms(self, step, arrays, num_buckets=None):
        self._forward("write_histograms", step, arrays, num_buckets)

    def write_hparams(self, hparams):
        self._forward("write_hparams", hparams)

    def flush(self):
        self._forward("flush")

    def close(self):
        self._forward("close")


def create_progress_reporter(total_steps: int, writer: Any):
    """clu's ReportProgress: steps/s in TensorBoard (its log line shows with --verbose)."""
    from clu import periodic_actions

    return periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer, every_secs=30)


def describe_parameters(params: Any, workdir: str) -> str:
    """Writes clu's parameter table to <workdir>/parameters.txt (process 0; on the console too with --verbose) and
    returns what the console says of it: '81,234 parameters (317.3 KiB), table in <workdir>/parameters.txt'."""
    from clu import parameter_overview

    table = parameter_overview.get_parameter_overview(params, include_stats=False)
    path = paths.join(workdir, "parameters.txt")
    if jax.process_index() == 0:
        paths.write_text(path, table + "\n")
    if console.verbose():
        logging.info("Parameters:\n%s", table)
    leaves = jax.tree_util.tree_leaves(params)
    count = sum(int(np.prod(x.shape)) for x in leaves)
    size = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in leaves)
    return f"{count:,} parameters ({_bytes(size)}), table in {path}"


def _bytes(size: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while size >= 1024 and power < len(units) - 1:
        size, power = size / 1024, power + 1
    return f"{size:.0f} B" if power == 0 else f"{size:.1f} {units[power]}"


def write_summary(workdir: str, summary: dict[str, Any]) -> str:
    """Writes <workdir>/summary.json (local or gs://) so that no reader sees half of it, on process 0 only."""
    path = paths.join(workdir, "summary.json")
    if jax.process_index() != 0:
        return path
    paths.write_text(path, json.dumps(summary, indent=2, sort_keys=True, default=_jsonable))
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)
