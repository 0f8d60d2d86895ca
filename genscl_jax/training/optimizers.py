"""Learning-rate schedules and optimizers, all through optax.

- sgd: momentum SGD (optional Nesterov) with weight decay on every parameter, as torch.optim.SGD in the
  authors' code does.
- lars: LARS with BatchNorm and bias parameters (every 1-D parameter) excluded from weight decay and from the
  trust ratio, as in SimCLR/SupCon's large-batch ImageNet recipes.
- adamw: decoupled weight decay, again not on 1-D parameters.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def global_norm(tree: Any) -> jax.Array:
    """L2 norm of all leaves together (optax renamed its helper twice; this stays put)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree_util.tree_leaves(tree)))


def peak_learning_rate(config: Any) -> float:
    scale = config.batch_size / 256 if config.lr_batch_scaling else 1.0
    return config.learning_rate * scale


def warmup_cosine_schedule(*, peak_lr: float, total_steps: int, warmup_steps: int, warmup_start_lr: float,
                           min_lr_factor: float) -> optax.Schedule:
    """Linear warm-up from warmup_start_lr to peak_lr, then cosine decay to peak_lr * min_lr_factor."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=warmup_start_lr if warmup_steps else peak_lr, peak_value=peak_lr,
        warmup_steps=warmup_steps, decay_steps=max(total_steps, warmup_steps + 1),
        end_value=peak_lr * min_lr_factor)


def _matrices_only(params: Any) -> Any:
    """True for kernels, False for BatchNorm scales/biases and Dense/Conv biases."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


OPTIMIZERS = ("sgd", "lars", "adamw")  # the names create_optimizer builds


def create_optimizer(*, name: str, learning_rate: optax.Schedule, momentum: float, nesterov: bool,
                     weight_decay: float, grad_clip_norm: float = 0.0) -> optax.GradientTransformation:
    if name == "sgd":
        tx = optax.chain(optax.add_decayed_weights(weight_decay),
                         optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))
    elif name == "lars":
        tx = optax.lars(learning_rate, weight_decay=weight_decay, weight_decay_mask=_matrices_only,
                        trust_ratio_mask=_matrices_only, momentum=momentum, nesterov=nesterov)
    elif name == "adamw":
        tx = optax.adamw(learning_rate, weight_decay=weight_decay, mask=_matrices_only)
    else:
        raise ValueError(f"optimizer {name!r} is unknown; use one of {OPTIMIZERS}")
    if grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
    return tx


def total_train_steps(config: Any, steps_per_epoch: int) -> int:
    """config.num_train_steps, or config.num_epochs passes of `steps_per_epoch` steps over the training split."""
    return config.num_train_steps or int(config.num_epochs * steps_per_epoch)


def optimizer_from_config(config: Any, total_steps: int, steps_per_epoch: int
                          ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = warmup_cosine_schedule(
        peak_lr=peak_learning_rate(config), total_steps=total_steps,
        warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
        warmup_start_lr=config.warmup_start_lr, min_lr_factor=config.min_lr_factor)
    tx = create_optimizer(name=config.optimizer, learning_rate=schedule, momentum=config.momentum,
                          nesterov=config.nesterov, weight_decay=config.weight_decay,
                          grad_clip_norm=config.grad_clip_norm)
    return tx, schedule
