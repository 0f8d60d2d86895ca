"""BatchNorm over groups of the batch ("ghost" BatchNorm), the normalisation a micro-batched step computes.

A micro-batched training step runs the encoder on one micro-batch at a time, so BatchNorm can only see that
micro-batch's statistics. GhostBatchNorm computes the same thing on the whole batch at once: in train mode the
batch's rows are split into groups and each group is normalised with its own mean and variance. So a dense step
with groups of M source images and a step over micro-batches of M source images are one function computed two
ways (tests/test_micro_batches.py checks that they agree).

Groups are strided, like the micro-batches (training/micro_batches.py): source image r of a batch of B images
belongs to group r mod (B / M), and its `views` consecutive rows (the views of one image are adjacent, batch-major)
stay together. With the batch sharded by rows over D devices and M divisible by D, every group spans all devices
equally and the grouping moves no data: the statistics are [groups, C] sums reduced across devices.

Running statistics are updated with the mean over groups of each group's mean and variance,
    running <- momentum * running + (1 - momentum) * mean_g(stat_g),
which is what averaging the per-micro-batch updates of nn.BatchNorm gives. Evaluation (train=False) uses the
running statistics and is the same as nn.BatchNorm's. Parameters and variables have nn.BatchNorm's names and
shapes, so checkpoints, conversion and export do not see the difference.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class BatchNormGroups:
    """How train-mode BatchNorm groups a batch: `size` source images per group, `views` adjacent rows per image."""
    size: int
    views: int = 1

    def count(self, rows: int) -> int:
        """Groups in a batch of `rows` rows (1: the whole batch is one group, e.g. one micro-batch)."""
        images = rows // self.views
        if rows % self.views or images % self.size:
            raise ValueError(f"BatchNorm groups of {self.size} images x {self.views} views do not divide a batch of "
                             f"{rows} rows")
        return images // self.size


class GhostBatchNorm(nn.BatchNorm):
    """nn.BatchNorm whose train-mode statistics are per group of the batch (see the module docstring).

    Only the last axis is a feature axis (the ResNet's NHWC layout). One group is exactly nn.BatchNorm.
    """

    groups: BatchNormGroups | None = None

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        given = use_running_average
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        if use_running_average or self.groups is None or self.groups.count(x.shape[0]) == 1:
            return super().__call__(x, given, mask=mask)
        if mask is not None or self.axis not in (-1, x.ndim - 1):
            raise ValueError("GhostBatchNorm normalises the last axis and takes no mask")
        return self._grouped(x, self.groups.count(x.shape[0]))

    def _grouped(self, x: jax.Array, num_groups: int) -> jax.Array:
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
        scale = self.param("scale", self.scale_init, features, self.param_dtype)
        bias = self.param("bias", self.bias_init, features, self.param_dtype)
        # [images per group, groups, views, ..., C]: image r = i * num_groups + g is in group g (strided).
        grouped = x.reshape((-1, num_groups, self.groups.views) + x.shape[1:])
        axes = (0,) + tuple(range(2, grouped.ndim - 1))
        # The same arithmetic as nn.BatchNorm: float32 statistics, E[x^2] - E[x]^2 clipped at 0.
        values = grouped.astype(jnp.promote_types(self.dtype or x.dtype, jnp.float32))
        mean = values.mean(axes)
        var = jnp.maximum(0.0, jnp.square(values).mean(axes) - jnp.square(mean))  # [groups, C]
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean.mean(0)
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var.mean(0)
        shape = [1] * grouped.ndim
        shape[1], shape[-1] = num_groups, features[0]
        y = grouped - mean.reshape(shape)
        y = y * (jax.lax.rsqrt(var + self.epsilon).reshape(shape) * scale) + bias
        return jnp.asarray(y, self.dtype or jnp.result_type(x, scale, bias)).reshape(x.shape)
