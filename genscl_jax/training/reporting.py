"""What a run tells the user: clu metric writers (TensorBoard + console), progress, parameter overview, and the
final <workdir>/summary.json. Only process 0 writes files; other processes log to the console only.

TensorBoard events are a convenience: when they cannot be written (e.g. TensorFlow has no client for the workdir's
URL), the run warns once and goes on without them. Checkpoints and summary.json are never optional.
"""

from __future__ import annotations

import json
from typing import Any

import jax
from absl import logging

from genscl_jax.runtime import paths


def create_writer(workdir: str):
    """Console metrics on every process; TensorBoard events in `workdir` from process 0, when they can be written."""
    from clu import metric_writers  # imports TensorFlow's summary writer: keep it off the benchmark path

    writers = [metric_writers.LoggingWriter()]
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
    """clu's ReportProgress: steps/s and ETA in the log and in TensorBoard."""
    from clu import periodic_actions

    return periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer, every_secs=30)


def log_parameter_overview(params: Any) -> None:
    from clu import parameter_overview

    logging.info("Parameters:\n%s", parameter_overview.get_parameter_overview(params, include_stats=False))


def write_summary(workdir: str, summary: dict[str, Any]) -> str:
    """Writes <workdir>/summary.json (local or gs://) so that no reader sees half of it, on process 0 only."""
    path = paths.join(workdir, "summary.json")
    if jax.process_index() != 0:
        return path
    paths.write_text(path, json.dumps(summary, indent=2, sort_keys=True, default=_jsonable))
    logging.info("Wrote %s", path)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)
