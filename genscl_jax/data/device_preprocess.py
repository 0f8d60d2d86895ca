"""What the compiled steps do to a batch's images before the network: the device half of the input pipeline.

Images leave the host as uint8 pixels (0-255; a quarter of float32's bytes: 301,056 B instead of 1,204,224 per
two-view 224 px image), from the tf.data pipeline and the synthetic generator alike. Every step that feeds a
network (pretraining, supervised, linear evaluation, kNN, their evaluations) calls one function of this module at
its top, inside the compiled program:

- `train_views(key, views, preprocessing)`: a training batch's views [B, V, H, W, C] -> float32 network input:
  SimCLR's colour jitter, grayscale and blur when the view plan puts them on the device (`device_color_augment`),
  then normalisation;
- `normalize(images, preprocessing)`: evaluation images -> (images / 255 - mean) / std per channel.

A `Preprocessing` says which of those run; `for_plan` reads it from the view plan the host pipeline reads too
(genscl_jax.data.views), so the two halves agree. JAX only: the bench and the steps import it on
machines without TensorFlow.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from genscl_jax.data import device_augment, registry
from genscl_jax.data.views import ColorJitter, ViewPlan


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The device's share of the input pipeline (static under jit). mean / std: per channel, 0-1 scale."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    color: ColorJitter | None = None  # SimCLR's colour jitter + grayscale on the device (None: none)
    blur_prob: float = 0.0  # SimCLR's Gaussian blur with this probability per view, on the device

    @classmethod
    def of(cls, info: registry.DatasetInfo) -> Preprocessing:
        """Normalisation with the dataset's statistics, nothing else (evaluation, and training policies that the
        host completes)."""
        return cls(mean=tuple(info.mean), std=tuple(info.std))

    @property
    def augments(self) -> bool:
        return self.color is not None or self.blur_prob > 0


def for_plan(plan: ViewPlan, info: registry.DatasetInfo) -> Preprocessing:
    """What the step must do to views made by the host's half of `plan`: its device share (colour jitter, grayscale
    and blur with device_color_augment), then normalisation with `info`'s statistics."""
    return dataclasses.replace(Preprocessing.of(info), color=plan.device_color, blur_prob=plan.device_blur_prob)


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
    color = preprocessing.color or ColorJitter()  # its values unused when there is no colour jitter
    unit = device_augment.augment_with_keys(keys, views.astype(jnp.float32) / 255.0,
                                            color=preprocessing.color is not None, blur_prob=preprocessing.blur_prob,
                                            jitter_strength=color.strength, jitter_prob=color.prob,
                                            grayscale_prob=color.grayscale_prob)
    return _normalize_unit(unit, preprocessing)


def _normalize_unit(unit: jax.Array, preprocessing: Preprocessing) -> jax.Array:
    channels = unit.shape[-1]
    if len(preprocessing.mean) != channels or len(preprocessing.std) != channels:
        raise ValueError(f"images have {channels} channels but the statistics {preprocessing.mean} / "
                         f"{preprocessing.std} have {len(preprocessing.mean)}")
    mean = jnp.asarray(preprocessing.mean, jnp.float32)
    return (unit - mean) / jnp.asarray(preprocessing.std, jnp.float32)
