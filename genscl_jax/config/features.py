"""Whether a feature of a run is on, read from its config: the one place that says so. Validation, the rerun
policy, the trainers and the steps' settings ask here.

Imports nothing: the trainers read it too (tests/test_layering.py).
"""

from __future__ import annotations

from typing import Any


def distillation(config: Any) -> bool:
    """A teacher's label distributions are part of the loss (config.kd.alpha > 0)."""
    return config.kd.alpha > 0


def moco(config: Any) -> bool:
    """The EMA key encoder and the key queue (config.moco.enabled)."""
    return bool(config.moco.enabled)


def mixing(config: Any) -> bool:
    """Mixup / CutMix of the views (config.mix.kind)."""
    return config.mix.kind != "none"


def micro_batching(config: Any) -> bool:
    """The encoder runs over micro-batches of config.micro_batch_size source images."""
    return config.micro_batch_size > 0


def linear_evaluation(config: Any) -> bool:
    """The mode trains a linear classifier on a frozen encoder (config.linear_eval is read)."""
    return config.mode in ("linear_eval", "pretrain_and_eval")
