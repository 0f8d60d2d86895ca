"""BatchNorm recalibration: a frozen network's running statistics recomputed on other images.

A network trained on augmented (and perhaps Mixup/CutMix-mixed) views keeps the running means and variances of
those views; linear evaluation then normalises clean images with them. Recomputing them on clean training images
(what torch.optim.swa_utils.update_bn does after weight averaging) separates what the weights learned from a
mismatch of the statistics. The weights are untouched and nothing is differentiated.

Each BatchNorm layer's new running mean and variance are the mean and (biased) variance of the layer's inputs over
all recalibration images, per channel (over the batch and spatial positions). The network runs in train mode, as
in training: every layer normalises with its own batch's statistics, so no old running statistic is read and the
result does not depend on them. Per batch the compiled function returns each layer's input mean and variance (read
off the layer's call by a Flax method interceptor); the host combines equal-sized batches in float64 (the variance
of all inputs is the mean of the batch variances plus the variance of the batch means).
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from genscl_jax.runtime import parallel


def batch_moments(module: nn.Module, variables: dict[str, Any], images: jax.Array) -> dict[tuple[str, ...], Any]:
    """{layer path: (mean, variance) of its inputs over this batch, per channel} for every BatchNorm layer of
    `module`, run in train mode on `images`."""
    moments = {}

    def record_inputs(call, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            x = args[0].astype(jnp.float32)  # BatchNorm computes its statistics in float32 as well
            axes = tuple(range(x.ndim - 1))
            moments[context.module.path] = (jnp.mean(x, axes), jnp.var(x, axes))
        return call(*args, **kwargs)

    with nn.intercept_methods(record_inputs):
        module.apply(variables, images, train=True, mutable=["batch_stats"])
    return moments


def recalibrate_batch_stats(module: nn.Module, variables: dict[str, Any], image_batches: Iterable[jax.Array],
                            num_batches: int, mesh: Mesh) -> dict[str, Any]:
    """`variables` with every BatchNorm layer's running mean and variance replaced by those of its inputs over the
    first `num_batches` of `image_batches` (equal-sized global batches, NHWC, normalised as in training)."""
    moments_fn = jax.jit(lambda v, x: batch_moments(module, v, x), out_shardings=parallel.replicated(mesh))
    per_batch = [jax.device_get(moments_fn(variables, images))
                 for images in itertools.islice(image_batches, num_batches)]
    if len(per_batch) < num_batches:
        raise ValueError(f"BatchNorm recalibration needs {num_batches} batches; the data gave {len(per_batch)}")
    batch_stats = jax.tree_util.tree_map(np.array, jax.device_get(variables["batch_stats"]))  # a copy to fill in
    for path in per_batch[0]:
        means = np.stack([np.asarray(moments[path][0], np.float64) for moments in per_batch])
        variances = np.stack([np.asarray(moments[path][1], np.float64) for moments in per_batch])
        layer = batch_stats
        for name in path:
            layer = layer[name]
        layer["mean"] = means.mean(0).astype(layer["mean"].dtype)
        # Over equal-sized batches: the variance of all inputs = mean of the batch variances + variance of the means.
        layer["var"] = (variances.mean(0) + means.var(0)).astype(layer["var"].dtype)
    return {**variables, "batch_stats": batch_stats}
