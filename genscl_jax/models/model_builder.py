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


def batch_norm_groups(config: Any, views: int) -> models.BatchNormGroups | None:
    """Train-mode BatchNorm groups: the micro-batch (config.micro_batch_size source images) when the step runs in
    micro-batches, else config.bn_group_size (the same grouping on the dense step); None: the whole batch."""
    size = config.micro_batch_size or config.bn_group_size
    return models.BatchNormGroups(size, views) if size else None


def build_encoder(config: Any, *, num_classes: int | None = None, training_views: int = 0,
                  platform: str = "") -> models.ResNet:
    """The encoder `config` describes. training_views > 0: as a training step compiled for `platform` (the
    platform of its mesh, runtime/parallel.mesh_platform) runs it on batches with that many adjacent views per
    source image (BatchNorm groups, config.remat, and on CPU, when micro-batching, gradient convolutions XLA:CPU
    runs fast inside the micro-batch loop: models/convolution.py); 0: for evaluation and export, which need none of
    these (and read configs recorded before those keys existed)."""
    training = {}
    if training_views:
        if not platform:
            raise ValueError("build_encoder: a training encoder needs the platform of the mesh its step runs on")
        training = dict(bn_groups=batch_norm_groups(config, training_views), remat=config.remat,
                        canonical_conv_gradients=bool(config.micro_batch_size) and platform == "cpu")
    return models.create_resnet(
        config.model, stem=resolve_stem(config.stem, config.image_size), width_multiplier=config.width_multiplier,
        num_classes=num_classes, dtype=compute_dtype(config.dtype), zero_init_last_bn=config.zero_init_last_bn,
        **training)


def build_contrastive_model(config: Any, *, training_platform: str = "") -> models.ContrastiveModel:
    """Encoder + projection head; `training_platform`: as the pretraining step compiled for that platform runs it
    (build_encoder's training_views and platform); empty: for evaluation and export."""
    feature_dim = models.feature_dim(config.model, config.width_multiplier)
    head = models.ProjectionHead(hidden_dim=config.head.hidden_dim or feature_dim,
                                 output_dim=config.head.output_dim, kind=config.head.kind,
                                 dtype=compute_dtype(config.dtype))
    encoder = build_encoder(config, training_views=config.num_views if training_platform else 0,
                            platform=training_platform)
    return models.ContrastiveModel(encoder=encoder, head=head)
