"""Classification metrics, computed on device: top-1 / top-5 counts per batch, summed without host round trips.

Shared by linear evaluation, supervised training's test accuracy and pretraining's periodic evaluation (kNN and the
online probe), which also keeps the best of each accuracy (BestSoFar).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp

from genscl_jax.runtime import parallel


def accuracy_counts(scores: jax.Array, labels: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Number of masked-in rows whose label is the top-1 / among the top-5 classes of `scores` [B, C]."""
    top1 = jnp.argmax(scores, axis=-1) == labels
    _, top5 = jax.lax.top_k(scores, min(5, scores.shape[-1]))
    in_top5 = jnp.any(top5 == labels[:, None], axis=-1)
    return {"top1": jnp.sum(top1 & mask), "top5": jnp.sum(in_top5 & mask), "count": jnp.sum(mask)}


_accuracy_counts = jax.jit(accuracy_counts)


def top1_top5(counts: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
    """Fractions in [0, 1] from summed counts; an empty evaluation gives 0."""
    count = max(int(counts["count"]), 1)
    return {f"{prefix}top1": int(counts["top1"]) / count, f"{prefix}top5": int(counts["top5"]) / count}


def sum_counts(counts: Iterable[Any]) -> Any:
    """Adds per-batch counts (a dict of counts, or a nested dict of them) on device and brings the totals to the
    host once."""
    totals = None
    for batch_counts in counts:
        batch_counts = parallel.settled(batch_counts)  # one such program at a time on CPU processes
        totals = batch_counts if totals is None else jax.tree_util.tree_map(jnp.add, totals, batch_counts)
    if totals is None:
        return {"top1": 0, "top5": 0, "count": 0}
    return jax.tree_util.tree_map(int, jax.device_get(totals))


def classification_metrics(logits_fn: Callable[[jax.Array], jax.Array],
                           batches: Iterable[dict[str, jax.Array]]) -> dict[str, float]:
    """test_top1 / test_top5 over padded evaluation batches ({"image", "label", "mask"}); padding is not counted.

    Counts accumulate on device and come to the host once, so the evaluation never waits on a batch.
    """
    return top1_top5(sum_counts(_accuracy_counts(logits_fn(batch["image"]), batch["label"], batch["mask"])
                                for batch in batches))


def best_name(name: str) -> str:
    """The summary's name of the best value of metric `name`: "knn_top1" -> "knn_best_top1"."""
    prefix, _, what = name.rpartition("_")
    return f"{prefix}_best_{what}" if prefix else f"best_{what}"


class BestSoFar:
    """The best (highest) value seen of each accuracy metric, kept across evaluations and across a resume.

    `update(metrics)` returns `metrics` with best_name(name) added for every name ending in "top1" or "top5"."""

    def __init__(self):
        self.best: dict[str, float] = {}

    def update(self, metrics: dict[str, float]) -> dict[str, float]:
        accuracies = [name for name in metrics if name.endswith(("top1", "top5"))]
        for name in accuracies:
            self.best[best_name(name)] = max(self.best.get(best_name(name), metrics[name]), metrics[name])
        return {**metrics, **{best_name(name): self.best[best_name(name)] for name in accuracies}}

    def resume(self, saved_metrics: dict[str, float]) -> None:
        """Takes back the bests from the evaluation metrics saved beside a checkpoint."""
        for name, value in saved_metrics.items():
            if name.endswith(("top1", "top5")) and "best_" in name:
                self.best[name] = max(self.best.get(name, value), value)
