"""Builds the networks a config asks for (the models package itself knows nothing about configs)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from genscl_jax import models

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DTYPES = tuple(_DTYPES)
STEMS = ("auto",) + models.STEMS  # "auto": resolve_stem picks by image size


def resolve_stem(stem: str, image_size: int) -> str:
    """"auto" picks the CIFAR stem below 64 px, where a stride-4 stem would throw away most of the image."""
    if stem != "auto":
        return stem
    return "cifar" if image_size < 64 else "imagenet"


def compute_dtype(name: str) -> Any:
    return _DTYPES[name]


def build_encoder(config: Any, *, num_classes: int | None = None) -> models.ResNet:
    return models.create_resnet(
        config.model, stem=resolve_stem(config.stem, config.image_size), width_multiplier=config.width_multiplier,
        num_classes=num_classes, dtype=compute_dtype(config.dtype), zero_init_last_bn=config.zero_init_last_bn)


def build_contrastive_model(config: Any) -> models.ContrastiveModel:
    feature_dim = models.feature_dim(config.model, config.width_multiplier)
    head = models.ProjectionHead(hidden_dim=config.head.hidden_dim or feature_dim,
                                 output_dim=config.head.output_dim, kind=config.head.kind,
                                 dtype=compute_dtype(config.dtype))
    return models.ContrastiveModel(encoder=build_encoder(config), head=head)
