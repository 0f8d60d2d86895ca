"""The GenSCL loss computed in blocks of anchor rows, for contrast sets too large for one [N, M] matrix.

`losses.generalized_supcon_loss` materialises several [N, M] float32 matrices (logits, label similarity, masks,
exp, log-probabilities) and keeps most of them for the backward pass. With N = 8192 anchors against an EMA
queue of 65536 keys that is 2.4 GB per matrix. Here the anchors are split into blocks of `block_size` rows;
`lax.map` computes one block's row losses at a time and `jax.checkpoint` makes the backward recompute a
block's matrices instead of keeping every block's, so the live [., M] working set is a few [block_size, M]
matrices whatever N is.

Each row's loss is the same arithmetic as in losses.py (same order of operations, same precision), and the
mean over rows is taken once over all N rows, so the result equals the dense one to float32 rounding
(tests/test_bench.py checks values and gradients).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genscl_jax.objectives import losses


def generalized_supcon_loss_chunked(
    features: jax.Array,
    labels: jax.Array,
    *,
    contrast_features: jax.Array | None = None,
    contrast_labels: jax.Array | None = None,
    contrast_mask: jax.Array | None = None,
    exclude_self: bool | None = None,
    temperature: float = 0.1,
    base_temperature: float = 0.07,
    normalization: str = "label_sum",
    block_size: int = 1024,
) -> jax.Array:
    """Same arguments and result as losses.generalized_supcon_loss, plus `block_size` anchor rows per block."""
    losses.check_normalization(normalization)  # the same validation, the same message
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    if features.shape[0] <= block_size:  # one block: the dense loss is the same computation, without recompute
        return losses.generalized_supcon_loss(
            features, labels, contrast_features=contrast_features, contrast_labels=contrast_labels,
            contrast_mask=contrast_mask, exclude_self=exclude_self, temperature=temperature,
            base_temperature=base_temperature, normalization=normalization)
    contrast_features, contrast_labels, exclude_self = losses.resolve_contrasts(
        features, labels, contrast_features, contrast_labels, exclude_self)

    anchors = features.astype(jnp.float32)
    contrasts = contrast_features.astype(jnp.float32)
    unit_labels = losses.unit_rows(labels.astype(jnp.float32))
    unit_contrast_labels = losses.unit_rows(contrast_labels.astype(jnp.float32))
    num_anchors, num_contrasts = anchors.shape[0], contrasts.shape[0]
    column_keep = jnp.ones((num_contrasts,), bool) if contrast_mask is None else contrast_mask.astype(bool)

    num_blocks = -(-num_anchors // block_size)
    padding = num_blocks * block_size - num_anchors
    # Padded rows (zero features, zero labels) give finite losses that are dropped before the mean.
    row_ids = _strided_blocks(jnp.arange(num_blocks * block_size, dtype=jnp.int32), num_blocks)
    anchor_blocks = _strided_blocks(jnp.pad(anchors, ((0, padding), (0, 0))), num_blocks)
    label_blocks = _strided_blocks(jnp.pad(unit_labels, ((0, padding), (0, 0))), num_blocks)

    @jax.checkpoint
    def block_row_losses(block):
        block_anchors, block_labels, block_rows = block
        similarity = jnp.matmul(block_labels, unit_contrast_labels.T, precision=jax.lax.Precision.HIGHEST)
        logits = jnp.matmul(block_anchors, contrasts.T, precision=jax.lax.Precision.HIGHEST) / temperature
        keep = jnp.broadcast_to(column_keep[None, :], logits.shape)
        if exclude_self:
            keep = keep & (block_rows[:, None] != jnp.arange(num_contrasts, dtype=jnp.int32)[None, :])
        return losses.row_losses(logits, similarity, keep, normalization)

    row_loss = jax.lax.map(block_row_losses, (anchor_blocks, label_blocks, row_ids))
    row_loss = jnp.swapaxes(row_loss, 0, 1).reshape(-1)[:num_anchors]  # back to row order
    return (temperature / base_temperature) * jnp.mean(row_loss)


def _strided_blocks(x: jax.Array, num_blocks: int) -> jax.Array:
    """[R, ...] -> [num_blocks, R / num_blocks, ...], block k holding rows k, k + num_blocks, k + 2 num_blocks, ...

    Strided, not contiguous, for the same reason as the step's micro-batches (training/micro_batches.py): with the
    anchors sharded by rows over D devices (R / D rows each, divisible by num_blocks), every block takes the same
    rows of every device's shard, so each device scores block_size / D anchors per block and no anchor moves.
    Contiguous blocks would each lie on one device: the partitioner gathers them all and every device computes
    every block (BENCHMARKS.md section 9.4)."""
    x = x.reshape((x.shape[0] // num_blocks, num_blocks) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
