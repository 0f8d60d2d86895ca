"""The view plan: the augmentation policy resolved once, from the config and the dataset, into what is done to
every view and where (on the host, in the tf.data pipeline; or on the device, in the compiled step).

This module is the only reader of the policy string (config.augment, config.linear_eval.augment). Everything after
it reads a ViewPlan's fields: the host's ops (genscl_jax.data.host_views), the device's preprocessing
(genscl_jax.data.device_preprocess), whether linear evaluation may store features (`ViewPlan.random`).

Policies (POLICIES):
- "simclr": random resized crop + flip, colour jitter (torchvision's ColorJitter, applied with a probability),
  grayscale with a probability, and SimCLR's Gaussian blur for photo-sized views (ImageNet, or image folders and
  tfds:NAME datasets above 64 px: SimCLR and MoCo v2 blur them; at CIFAR sizes blur only destroys the views);
- "autoaugment": crop + flip, then torchvision's ImageNet AutoAugment policy;
- "randaugment": crop + flip, then RandAugment (2 ops at magnitude 9);
- "crop_flip": random resized crop + flip only;
- "none": the evaluation view (ImageNet: resize + centre crop; image folders: the central square; small images
  padded or resized), the same every time.

With `device_color_augment` simclr's colour jitter, grayscale and blur move to the step (the host only decodes,
crops and flips); the other policies' ops have no device version and stay on the host.

No TensorFlow, no JAX: config validation reads POLICIES and the plan is made before anything is compiled.
"""

from __future__ import annotations

import dataclasses
from typing import Any

POLICIES = ("simclr", "autoaugment", "randaugment", "crop_flip", "none")
# Grayscale weights of ITU-R 601 luma, the ones torchvision and tf.image.rgb_to_grayscale use; the host and the
# device colour augmentations share them.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
# SimCLR's Gaussian blur, shared by the host and the device: sigma uniform in this range, a kernel about a tenth of
# the view's side.
BLUR_SIGMA = (0.1, 2.0)
# SimCLR's (and MoCo v2's) blur probability for photo-sized views.
_PHOTO_BLUR_PROB = 0.5
# torchvision's RandomResizedCrop default aspect-ratio range.
CROP_RATIO = (3 / 4, 4 / 3)


def blur_kernel_size(side: int) -> int:
    """The odd blur kernel of a `side` px view (23 taps at 224 px, 1, i.e. no blur, below 40 px)."""
    return 2 * (side // 20) + 1


@dataclasses.dataclass(frozen=True)
class ColorJitter:
    """torchvision's ColorJitter strengths (brightness, contrast, saturation, hue), applied with `prob`, then
    grayscale with `grayscale_prob`. The defaults are SimCLR's / SupCon's (config.color_jitter and its
    probabilities)."""

    strength: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    prob: float = 0.8
    grayscale_prob: float = 0.2


@dataclasses.dataclass(frozen=True)
class RandAugment:
    """RandAugment's `layers` ops per view, each at `magnitude` out of 10."""

    layers: int = 2
    magnitude: float = 9.0


@dataclasses.dataclass(frozen=True)
class ViewPlan:
    """What is done to each view of one stream of images, resolved once (`resolve`); frozen, hashable (static
    under jit).

    policy: the policy it was resolved from (for the record; nothing branches on it).
    random: False for the evaluation view (the same image every time, no crop); True: random resized crop
      (area in `crop_scale` of the image's, aspect in CROP_RATIO) + horizontal flip, then the ops below.
    auto_augment / rand_augment: the host's AutoAugment / RandAugment after the crop (None: not run).
    color: colour jitter + grayscale (None: none); blur_prob: SimCLR's Gaussian blur probability (0: none).
    device_color_augment: colour, grayscale and blur run in the compiled step instead of on the host.
    """

    policy: str
    image_size: int
    random: bool = True
    crop_scale: tuple[float, float] = (0.2, 1.0)
    auto_augment: bool = False
    rand_augment: RandAugment | None = None
    color: ColorJitter | None = None
    blur_prob: float = 0.0
    device_color_augment: bool = False

    @property
    def host_color(self) -> ColorJitter | None:
        """The colour jitter the host applies (None when there is none, or the device applies it)."""
        return None if self.device_color_augment else self.color

    @property
    def host_blur_prob(self) -> float:
        return 0.0 if self.device_color_augment else self.blur_prob

    @property
    def device_color(self) -> ColorJitter | None:
        """The colour jitter the step applies."""
        return self.color if self.device_color_augment else None

    @property
    def device_blur_prob(self) -> float:
        return self.blur_prob if self.device_color_augment else 0.0


def _blur_prob(entry: Any, image_size: int) -> float:
    """SimCLR's blur for this dataset's views: photos (ImageNet; image folders and tfds:NAME above 64 px) only."""
    photos = entry.stored_as_jpeg or (entry.variable_size and image_size > 64)
    return _PHOTO_BLUR_PROB if photos else 0.0


def resolve(policy: str, entry: Any, *, image_size: int, crop_scale=(0.2, 1.0), color: ColorJitter = ColorJitter(),
            device_color_augment: bool = False) -> ViewPlan:
    """The plan of `policy` for views of `entry` (a registry.Dataset) at `image_size` px: the one reading of the
    policy string. `color`: simclr's jitter strengths and probabilities; device_color_augment: simclr's colour and
    blur in the step."""
    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; choose from {POLICIES}")
    simclr = policy == "simclr"
    return ViewPlan(policy=policy, image_size=image_size, random=policy != "none",
                    crop_scale=tuple(float(s) for s in crop_scale), auto_augment=policy == "autoaugment",
                    rand_augment=RandAugment() if policy == "randaugment" else None,
                    color=color if simclr else None, blur_prob=_blur_prob(entry, image_size) if simclr else 0.0,
                    device_color_augment=device_color_augment and simclr)


@dataclasses.dataclass(frozen=True)
class RunViews:
    """A run's view plans, resolved once from its config and dataset (DataSource.views).

    train: pretraining's and supervised training's views (config.augment); linear_eval: linear evaluation's
    training views (config.linear_eval.augment); evaluation: the evaluation view (also the clean training stream
    that recalibrates BatchNorm statistics).
    """

    train: ViewPlan
    linear_eval: ViewPlan
    evaluation: ViewPlan


def color_jitter_from_config(config: Any) -> ColorJitter:
    return ColorJitter(strength=tuple(float(s) for s in config.color_jitter), prob=float(config.color_jitter_prob),
                       grayscale_prob=float(config.grayscale_prob))


def from_config(config: Any, entry: Any) -> RunViews:
    """The plans of `config` for `entry` (config.dataset's registry entry)."""
    common = dict(image_size=config.image_size, color=color_jitter_from_config(config),
                  device_color_augment=config.device_color_augment)
    return RunViews(train=resolve(config.augment, entry, crop_scale=tuple(config.crop_scale), **common),
                    linear_eval=resolve(config.linear_eval.augment, entry,
                                        crop_scale=tuple(config.linear_eval.crop_scale), **common),
                    evaluation=resolve("none", entry, **common))
