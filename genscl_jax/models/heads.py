"""Heads on top of the pooled encoder features: the contrastive projection head and the linear-probe classifier."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from genscl_jax.models.resnet import TORCH_LINEAR_KERNEL_INIT

HEAD_KINDS = ("mlp", "linear")

# Same floor as torch.nn.functional.normalize, so an all-zero row maps to zeros instead of NaN.
_NORM_EPS = 1e-12


def torch_linear_bias_init(fan_in: int):
    """torch.nn.Linear's default bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)); Flax's bias init cannot see fan_in."""
    bound = 1.0 / float(fan_in) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_linear(features: int, fan_in: int, *, dtype: Any, name: str) -> nn.Dense:
    """A Dense initialised as torch.nn.Linear, the layer the recipes' reference code (PyTorch) was tuned with."""
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, kernel_init=TORCH_LINEAR_KERNEL_INIT,
                    bias_init=torch_linear_bias_init(fan_in), name=name)


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    """Unit-norm rows, computed in float32."""
    x = x.astype(jnp.float32)
    norm = jnp.linalg.norm(x, axis=axis, keepdims=True)
    return x / jnp.maximum(norm, _NORM_EPS)


class ProjectionHead(nn.Module):
    """Maps features to the L2-normalised embedding the contrastive loss uses.

    kind="mlp": Dense(hidden_dim) "dense1" -> ReLU -> Dense(output_dim) "dense2", the paper's
    Linear(2048, 2048)-ReLU-Linear(2048, 128). kind="linear": one Dense(output_dim) "dense" (hidden_dim unused).
    The output is float32 whatever `dtype` the Dense layers compute in: the loss divides by a small temperature.
    Dense layers start as torch.nn.Linear's (weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
    """

    hidden_dim: int
    output_dim: int = 128
    kind: str = "mlp"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "mlp":
            x = torch_linear(self.hidden_dim, x.shape[-1], dtype=self.dtype, name="dense1")(x)
            x = nn.relu(x)
            x = torch_linear(self.output_dim, self.hidden_dim, dtype=self.dtype, name="dense2")(x)
        elif self.kind == "linear":
            x = torch_linear(self.output_dim, x.shape[-1], dtype=self.dtype, name="dense")(x)
        else:
            raise ValueError(f"unknown projection head kind {self.kind!r}; expected one of {HEAD_KINDS}")
        return l2_normalize(x)


class LinearClassifier(nn.Module):
    """Linear probe on frozen features: one float32 Dense "fc" -> logits [B, num_classes], torch.nn.Linear's init."""

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        return torch_linear(self.num_classes, x.shape[-1], dtype=jnp.float32, name="fc")(x)
