"""What the compiled steps do to a batch's images before the network: the device half of the input pipeline.

Images leave the host as uint8 pixels (0-255; a quarter of float32's bytes: 301,056 B instead of 1,204,224 per
two-view 224 px image), from the tf.data pipeline and the synthetic generator alike. Every step that feeds a
network (pretraining, supervised, linear evaluation, kNN, their evaluations) calls one function of this module at
its top, inside the compiled program:

- `train_views(key, views, preprocessing)`: a training batch's views [B, V, H, W, C] -> float32 network input:
  SimCLR's colour jitter, grayscale and blur when the host left them to the device (`device_color_augment`), then
  normalisation;
- `normalize(images, preprocessing)`: evaluation images -> (images / 255 - mean) / std per channel.

A `Preprocessing` says which of those run; `for_training` is the one rule, shared with the host pipeline
(DataSource.train_batches), of what the host leaves to the device. JAX only: the bench and the steps import it on
machines without TensorFlow.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from genscl_jax.data import device_augment, registry


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The device's share of the input pipeline (static under jit). mean / std: per channel, 0-1 scale."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    color_augment: bool = False  # SimCLR's colour jitter + grayscale, on the device
    blur_prob: float = 0.0  # SimCLR's Gaussian blur with this probability per view, on the device

    @classmethod
    def of(cls, info: registry.DatasetInfo) -> Preprocessing:
        """Normalisation with the dataset's statistics, nothing else (evaluation, and training policies that the
        host completes)."""
        return cls(mean=tuple(info.mean), std=tuple(info.std))

    @property
    def augments(self) -> bool:
        return self.color_augment or self.blur_prob > 0


def for_training(entry: registry.Dataset, info: registry.DatasetInfo, *, policy: str, image_size: int,
                 device_color_augment: bool) -> Preprocessing:
    """What the step must do to training views of `entry` under `policy`: with device_color_augment, simclr's
    colour jitter, grayscale and (for ImageNet-sized photos) blur move from the host to the device; the other
    policies' ops have no device version and stay on the host."""
    on_device = device_color_augment and policy == "simclr"
    return dataclasses.replace(Preprocessing.of(info), color_augment=on_device,
                               blur_prob=entry.blur_prob(policy, image_size) if on_device else 0.0)


def normalize(images: jax.Array, preprocessing: Preprocessing) -> jax.Array:
    """Pixels (uint8, or any dtype on the 0-255 scale) [..., C] -> float32 (pixels / 255 - mean) / std."""
    return _normalize_unit(images.astype(jnp.float32) / 255.0, preprocessing)


def train_views(key: jax.Array, views: jax.Array, preprocessing: Preprocessing) -> jax.Array:
    """A training batch's views [B, V, H, W, C] (pixels) -> float32 network input, augmented as `preprocessing`
    says (each view its own randomness, drawn from `key`), then normalised."""
    return train_views_with_keys(device_augment.image_keys(key, views.shape[:-3]), views, preprocessing)


def train_views_with_keys(keys: jax.Array, views: jax.Array, preprocessing: Preprocessing) -> jax.Array:
    """train_views with each view's key given (`keys`: device_augment.image_keys, indexed like `views`), so a
    micro-batch of views is augmented exactly as in the whole batch."""
    if not preprocessing.augments:
        return normalize(views, preprocessing)
    unit = device_augment.augment_with_keys(keys, views.astype(jnp.float32) / 255.0,
                                            color=preprocessing.color_augment, blur_prob=preprocessing.blur_prob)
    return _normalize_unit(unit, preprocessing)


def _normalize_unit(unit: jax.Array, preprocessing: Preprocessing) -> jax.Array:
    channels = unit.shape[-1]
    if len(preprocessing.mean) != channels or len(preprocessing.std) != channels:
        raise ValueError(f"images have {channels} channels but the statistics {preprocessing.mean} / "
                         f"{preprocessing.std} have {len(preprocessing.mean)}")
    mean = jnp.asarray(preprocessing.mean, jnp.float32)
    return (unit - mean) / jnp.asarray(preprocessing.std, jnp.float32)
