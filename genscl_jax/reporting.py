"""What a run tells the user: clu metric writers (TensorBoard + console), progress, parameter overview, and the
final <workdir>/summary.json. Only process 0 writes files; other processes log to the console only."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
from absl import logging


def create_writer(workdir: str):
    from clu import metric_writers  # imports TensorFlow's summary writer: keep it off the benchmark path

    return metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0,
                                                asynchronous=True)


def create_progress_reporter(total_steps: int, writer: Any):
    """clu's ReportProgress: steps/s and ETA in the log and in TensorBoard."""
    from clu import periodic_actions

    return periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer, every_secs=30)


def log_parameter_overview(params: Any) -> None:
    from clu import parameter_overview

    logging.info("Parameters:\n%s", parameter_overview.get_parameter_overview(params, include_stats=False))


def write_summary(workdir: str, summary: dict[str, Any]) -> str:
    """Writes summary.json atomically (write to a temporary file, then rename), on process 0 only."""
    path = os.path.join(workdir, "summary.json")
    if jax.process_index() != 0:
        return path
    os.makedirs(workdir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=_jsonable)
    os.replace(tmp, path)
    logging.info("Wrote %s", path)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)
