"""Normalisation statistics measured from a dataset's own images: computed once, stored beside the data, re-read.

Datasets whose statistics are not in the registry (an image folder, tfds:NAME) get them from their training images
(genscl_jax.data.tf_stats measures them). Measuring reads every image, so the result is stored as JSON next to the
data, with a fingerprint of what it was measured on (file names, or the tfds dataset, version and split size);
later runs read it back, and measure again only when the fingerprint no longer matches (images added or removed).

No TensorFlow here: reading stored statistics must not need it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable

from absl import logging

from genscl_jax.runtime import console, paths

_FORMAT = 1  # Bumped when the file's meaning changes: an older file is then measured again.


@dataclasses.dataclass(frozen=True)
class Stats:
    """Per-channel mean and std on the 0-1 scale, of `num_images` images read with `channels` channels."""

    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_images: int = 0
    fingerprint: str = ""  # What they were measured on; another fingerprint means other data.


def load(path: str) -> Stats | None:
    """The statistics stored at `path`, or None when there are none (or they are unreadable or of another format)."""
    if not paths.exists(path):
        return None
    try:
        record = json.loads(paths.read_text(path))
        if record.get("format") != _FORMAT:
            return None
        return Stats(channels=int(record["channels"]), mean=tuple(map(float, record["mean"])),
                     std=tuple(map(float, record["std"])), num_images=int(record["num_images"]),
                     fingerprint=str(record["fingerprint"]))
    except (ValueError, KeyError, TypeError) as error:
        logging.warning("Ignoring the statistics in %s (%s); measuring them again.", path, error)
        return None


def save(path: str, stats: Stats) -> None:
    """Stores `stats` at `path`; a read-only location costs a warning (and a new measurement next run), not the run."""
    record = {"format": _FORMAT, **dataclasses.asdict(stats)}
    try:
        paths.write_text(path, json.dumps(record, indent=1) + "\n")
    except Exception as error:  # noqa: BLE001 -- epath's backends raise their own kinds (OSError, tf.errors, gcsfs)
        logging.warning("Could not store the dataset statistics in %s (%s: %s); the next run measures them again "
                        "(config.data_mean / config.data_std skip the measurement).", path, type(error).__name__,
                        error)


def load_or_compute(path: str, fingerprint: str, compute: Callable[[], Stats], *, what: str) -> Stats:
    """The statistics stored at `path` when they were measured on `fingerprint`, else compute() stored there."""
    stored = load(path)
    if stored is not None and stored.fingerprint == fingerprint:
        console.say(f"  statistics of {what} read from {path}: mean {_rounded(stored.mean)}, std "
                    f"{_rounded(stored.std)}")
        return stored
    if stored is not None:
        console.say(f"  the images of {what} changed since {path} was written; measuring them again")
    started = time.time()
    stats = dataclasses.replace(compute(), fingerprint=fingerprint)
    console.say(f"  statistics of {what} measured on {stats.num_images:,} images in {time.time() - started:.1f} s: "
                f"mean {_rounded(stats.mean)}, std {_rounded(stats.std)}; stored in {path}")
    save(path, stats)
    return stats


def _rounded(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"
