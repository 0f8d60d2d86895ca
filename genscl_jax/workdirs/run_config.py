"""<workdir>/config.json: the config a run started with, so whatever opens the workdir later (export,
load_encoder, a run that uses it as its teacher) builds the network that run trained, even before it finishes.

runner.run writes it at the start of every run (a resumed run rewrites it); summary.json, written at the end,
holds the same config under "config" and is the fallback for workdirs older than config.json.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections

from genscl_jax.runtime import paths

CONFIG_FILE = "config.json"
_SUMMARY_FILE = "summary.json"


def write(workdir: str, config: Any) -> str:
    """Writes <workdir>/config.json (local or gs://) on process 0; returns its path."""
    path = paths.join(workdir, CONFIG_FILE)
    if jax.process_index() == 0:
        # default=str: a value JSON has no type for is recorded by its text rather than failing the run.
        paths.write_text(path, json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str))
    return path


def read(workdir: str) -> ml_collections.ConfigDict | None:
    """The recorded config of the run in `workdir` (config.json, else summary.json's "config"); None if it has
    neither, i.e. it is not a workdir runner.run wrote."""
    config_path = paths.join(workdir, CONFIG_FILE)
    if paths.exists(config_path):
        return ml_collections.ConfigDict(json.loads(paths.read_text(config_path)))
    summary_path = paths.join(workdir, _SUMMARY_FILE)
    if paths.exists(summary_path):
        recorded = json.loads(paths.read_text(summary_path)).get("config")
        if isinstance(recorded, dict):
            return ml_collections.ConfigDict(recorded)
    return None
