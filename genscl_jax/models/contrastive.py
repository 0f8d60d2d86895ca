"""Encoder + projection head, the model trained by the contrastive loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from genscl_jax.models.heads import ProjectionHead


class ContrastiveModel(nn.Module):
    """`encoder(x, train)` must return pooled features [B, F] (e.g. a ResNet with num_classes=None).

    Variables live under "encoder" and "head". `init` through __call__ creates both; `encode` (for linear probes
    and kNN) needs only the "encoder" subtree, e.g. model.apply(variables, x, method=ContrastiveModel.encode).
    """

    encoder: nn.Module
    head: ProjectionHead

    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        features = self.encode(x, train=train)
        return dict(features=features, projection=self.head(features))

    def encode(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Pooled encoder features [B, F] float32, without the head."""
        features = self.encoder(x, train=train)
        if features.ndim != 2:
            raise ValueError(f"encoder must return pooled features [B, F], got shape {features.shape}")
        return features.astype(jnp.float32)
