"""MoCo-style EMA key encoder and key queue, as pure functions on pytrees.

The queue stores each key *with its label distribution* (and the teacher's, when distilling), because GenSCL
compares label distributions: a queued key is a soft positive of every anchor whose label it resembles.
Slots not yet written are masked out of the loss rather than filled with random keys, so the first steps see
exactly the current batch and nothing made up.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp


def ema_momentum(step: jax.Array, total_steps: int, base_momentum: float, cosine: bool) -> jax.Array:
    """The EMA coefficient at `step`: constant, or BYOL's cosine ramp from base_momentum to 1."""
    if not cosine:
        return jnp.asarray(base_momentum, jnp.float32)
    progress = jnp.minimum(step / max(total_steps, 1), 1.0)
    return 1.0 - (1.0 - base_momentum) * (jnp.cos(math.pi * progress) + 1.0) / 2.0


def ema_update(ema_tree: Any, online_tree: Any, momentum: jax.Array) -> Any:
    """ema <- momentum * ema + (1 - momentum) * online, leaf by leaf, keeping each leaf's dtype."""
    return jax.tree_util.tree_map(
        lambda e, o: (momentum * e + (1.0 - momentum) * o).astype(e.dtype), ema_tree, online_tree)


# The queue's field holding each label source's distributions: the step's labels["mixed"] (the ground truth after
# mixing) are stored as "labels", its labels["teacher"] as "teacher_labels". The names are the checkpoints' (a
# queue is part of the saved state), so they stay as they were; this table is where the two meet.
QUEUE_FIELDS = {"mixed": "labels", "teacher": "teacher_labels"}


def empty_queue(size: int, dim: int, num_classes: int, with_teacher_labels: bool) -> dict[str, jax.Array]:
    queue = {
        "keys": jnp.zeros((size, dim), jnp.float32),
        QUEUE_FIELDS["mixed"]: jnp.zeros((size, num_classes), jnp.float32),
        "pointer": jnp.zeros((), jnp.int32),
        "count": jnp.zeros((), jnp.int32),
    }
    if with_teacher_labels:
        queue[QUEUE_FIELDS["teacher"]] = jnp.zeros((size, num_classes), jnp.float32)
    return queue


def enqueue(queue: dict[str, jax.Array], new_entries: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Writes the newest entries over the oldest, wrapping around; `new_entries` has one [n, ...] array per
    stored field (keys, labels and, when present, teacher_labels)."""
    size = queue["keys"].shape[0]
    n = new_entries["keys"].shape[0]
    slots = (queue["pointer"] + jnp.arange(n)) % size
    updated = {name: queue[name].at[slots].set(new_entries[name].astype(queue[name].dtype))
               for name in queue if name not in ("pointer", "count")}
    updated["pointer"] = (queue["pointer"] + n) % size
    updated["count"] = jnp.minimum(queue["count"] + n, size)
    return updated


def filled_mask(queue: dict[str, jax.Array]) -> jax.Array:
    """[K] bool: which slots hold a key. Slots fill in order from 0, so the first `count` are valid."""
    return jnp.arange(queue["keys"].shape[0]) < queue["count"]
