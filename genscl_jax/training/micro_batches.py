"""A network's forward pass over micro-batches of the global batch, so that only one micro-batch's activations are
alive at a time, for batches whose activations do not fit in device memory at once.

What the loss needs stays whole: the step still gets every row's outputs ([rows, D] projections, [rows, F]
features, logits), computes its loss over the whole batch and differentiates it. Only the network runs in
pieces:

- `MicroBatches.forward_with_recompute` (the trained network): `lax.scan` over the micro-batches of a
  `jax.checkpoint`ed forward. The forward keeps no activations, only each micro-batch's outputs; autodiff then
  runs the scan backwards and, for each micro-batch, recomputes its forward and pulls the loss's cotangent of its
  outputs through it, summing the parameter gradients. That is GradCache (outputs without activations, the loss
  gradient with respect to them, a second pass per micro-batch with its cotangent) written as one differentiable
  function, so the gradient is exactly that of the function the dense step computes, for one extra forward pass.
- `MicroBatches.map` (networks without gradient: the EMA key encoder, the teacher): `lax.map` over the
  micro-batches.

Micro-batches are strided: source image r of a batch of B is in micro-batch r mod K (K = B / M micro-batches of M
images), its views with it. With the batch sharded by rows over D devices and each device's rows divisible by K
(M divisible by D), every micro-batch takes the same rows of every device's shard: forming them moves no data,
each spans all devices equally, and the result does not depend on D. Train-mode BatchNorm then normalises each
micro-batch with its own statistics (models/batch_norm.py computes the same grouping on the whole batch); the
updated running statistics are averaged over the micro-batches.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Union

import jax
import jax.numpy as jnp


# What a pass over the micro-batches takes: the batch's rows [rows, ...] as an array, or a builder k -> micro-batch
# k's rows (built when a pass needs them, so the whole batch's rows never exist at once).
RowsOrBuilder = Union[jax.Array, Callable[[jax.Array], jax.Array]]


@dataclasses.dataclass(frozen=True)
class MicroBatches:
    """How a step splits its batch: `num` strided micro-batches (1: the dense step) of rows with `views` adjacent
    rows (the views of one source image) per image."""
    num: int
    views: int = 1

    @classmethod
    def of(cls, batch_size: int, micro_batch_size: int, views: int = 1) -> "MicroBatches":
        """micro_batch_size source images per micro-batch; 0 or the whole batch: one (the dense step)."""
        if micro_batch_size and batch_size % micro_batch_size:
            raise ValueError(f"micro_batch_size={micro_batch_size} does not divide the batch of {batch_size} "
                             "images")
        return cls(batch_size // micro_batch_size if micro_batch_size else 1, views)

    def map(self, fn: Callable[[jax.Array], Any], x: RowsOrBuilder) -> Any:
        """fn(rows) -> a pytree of [rows, ...] arrays, computed one micro-batch at a time (no gradient is kept).

        `x`: the batch's rows, or a builder of a micro-batch's rows from its index (RowsOrBuilder;
        trainers/step_inputs.py)."""
        if self.num == 1:
            return fn(x)
        xs, rows_of = self._scanned(x)
        outputs = jax.lax.map(lambda m: fn(rows_of(m)), xs)
        return jax.tree_util.tree_map(lambda y: merge(y, self.views), outputs)

    def forward_with_recompute(self, apply: Callable[[Any, jax.Array], tuple[Any, Any]], params: Any,
                               x: RowsOrBuilder) -> tuple[Any, Any]:
        """apply(params, rows) -> (outputs, running_stats), over micro-batches, differentiable in `params`.

        `outputs` is a pytree of [rows, ...] arrays, returned for the whole batch in its order; `running_stats`
        (e.g. the updated BatchNorm statistics) is averaged over the micro-batches. Under jax.grad each
        micro-batch's forward is recomputed in the backward pass, so one micro-batch's activations are alive.
        """
        if self.num == 1:
            return apply(params, x)
        # prevent_cse=False: inside scan the recomputation cannot be merged with the forward (jax.checkpoint docs).
        # Rows built from an index are built inside the recomputed body, so the backward pass rebuilds them too.
        xs, rows_of = self._scanned(x)
        body = jax.checkpoint(lambda params, m: apply(params, rows_of(m)), prevent_cse=False)
        _, (outputs, stats) = jax.lax.scan(lambda carry, m: (carry, body(params, m)), None, xs)
        return (jax.tree_util.tree_map(lambda y: merge(y, self.views), outputs),
                jax.tree_util.tree_map(lambda s: jnp.mean(s, axis=0), stats))

    def _scanned(self, x: RowsOrBuilder) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
        """What a pass over the micro-batches scans (the split rows, or the micro-batch indices) and how one
        scanned element becomes that micro-batch's rows."""
        if callable(x):
            return jnp.arange(self.num), x
        return split(x, self.num, self.views), lambda rows: rows


def split(x: jax.Array, num: int, views: int) -> jax.Array:
    """[B * views, ...] rows, batch-major (the views of an image adjacent) -> [num, B / num * views, ...], micro-batch k
    holding images k, k + num, k + 2 num, ... with their views."""
    rows = x.shape[0]
    x = x.reshape((rows // (num * views), num, views) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1).reshape((num, rows // num) + x.shape[3:])


def merge(y: jax.Array, views: int) -> jax.Array:
    """split's inverse: [num, rows / num, ...] -> [rows, ...] in the batch's order."""
    num, rows = y.shape[:2]
    y = y.reshape((num, rows // views, views) + y.shape[2:])
    return jnp.swapaxes(y, 0, 1).reshape((num * rows,) + y.shape[3:])
