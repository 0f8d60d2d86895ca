"""The host's half of a view plan: one example's views made as a views.ViewPlan says, as stateless TensorFlow ops.

The ops live by concern: augment_geometry (crop, flip, resize, quantisation), augment_color (colour jitter,
grayscale, blur) and augment_policies (RandAugment and AutoAugment, one op table). Every view leaves as uint8;
normalisation, and simclr's colour and blur when the plan puts them on the device, are the step's
(genscl_jax.data.device_preprocess).

Importing this module imports TensorFlow; only genscl_jax.data.tf_pipeline imports it (see genscl_jax.data).
"""

from __future__ import annotations

from genscl_jax.data import augment_color, augment_geometry, augment_policies
from genscl_jax.data.augment_geometry import split_seed
from genscl_jax.data.views import ViewPlan

import tensorflow as tf


def augment_view(image, seed, plan: ViewPlan):
    """One random view (plan.random): decoded image (uint8, or float in [0, 1]) of any size -> uint8 [S, S, C].

    A view that is only cropped and flipped never leaves uint8; the others are computed in float [0, 1] and
    quantised once, at the end. The evaluation view (not plan.random) is the pipeline's, per dataset.
    """
    if not plan.random:
        raise ValueError(f"policy {plan.policy!r} makes the evaluation view, which the pipeline makes per dataset "
                         "(tf_pipeline), not augment_view")
    crop_seed, flip_seed, jitter_seed, gray_seed, blur_seed, policy_seed = split_seed(seed, 6)
    image, size = augment_geometry.as_uint8(image), plan.image_size
    color, blur_prob = plan.host_color, plan.host_blur_prob
    if not (plan.auto_augment or plan.rand_augment or color or blur_prob > 0):
        crop = augment_geometry.random_crop(image, crop_seed, plan.crop_scale)
        return augment_geometry.random_flip(augment_geometry.resize_to_uint8(crop, size), flip_seed)
    image = augment_geometry.random_resized_crop(image, crop_seed, size, plan.crop_scale)
    image = augment_geometry.random_flip(image, flip_seed)
    # Auto/RandAugment run after the crop (as in SupCon's torchvision pipeline): on the small crop it is cheap.
    if plan.auto_augment:
        image = augment_policies.auto_augment(image, policy_seed)
    if plan.rand_augment:
        image = augment_policies.rand_augment(image, policy_seed, plan.rand_augment.layers,
                                              plan.rand_augment.magnitude)
    if color:
        image = augment_color.random_color_jitter(image, jitter_seed, color.strength, color.prob)
        image = augment_color.random_grayscale(image, gray_seed, color.grayscale_prob)
    if blur_prob > 0:
        image = augment_color.random_gaussian_blur(image, blur_seed, blur_prob)
    return augment_geometry.to_uint8(image)


def augment_views(image, seed, num_views: int, plan: ViewPlan):
    """`num_views` independent random views of one image, stacked: uint8 [V, S, S, C]."""
    return tf.stack([augment_view(image, view_seed, plan) for view_seed in split_seed(seed, num_views)])
