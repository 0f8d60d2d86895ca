"""Colour ops of the host pipeline as stateless TensorFlow ops: torchvision-style colour jitter in a random order,
grayscale, SimCLR's Gaussian blur, and the enhance ops RandAugment and AutoAugment share.

Colour semantics follow torchvision's ColorJitter (the authors' code is PyTorch): brightness multiplies,
contrast and saturation blend with the grayscale mean / grayscale image, hue rotates in HSV, the four are
applied in a random order, every result is clipped to [0, 1]. genscl_jax.data.device_augment implements the
same maths in JAX for the accelerator. Images are float32 [0, 1], [H, W, C] with C = 1 or 3; the ops that need
three channels (saturation, hue, grayscale) leave one-channel images as they are.
"""

from __future__ import annotations

import tensorflow as tf

from genscl_jax.data.augment_geometry import split_seed, uniform
from genscl_jax.data.views import BLUR_SIGMA, GRAY_WEIGHTS, blur_kernel_size


def channel_count(image) -> int:
    """The static channel count; colour ops branch on it in Python, so it must be known."""
    channels = image.shape[-1]
    if channels not in (1, 3):
        raise ValueError(f"expected a static channel count of 1 or 3, got image shape {image.shape}")
    return channels


# TF's CPU kernels for per-channel broadcasting ([H, W, 3] op [3] or [H, W, 1]) are several times slower
# than a [H*W, 3] x [3, 3] matmul, so the RGB colour ops below are written as 3x3 colour matrices.


def _color_matrix(image, matrix):
    """Each output channel c = sum_k image[..., k] * matrix[k, c]."""
    return tf.tensordot(image, tf.cast(matrix, image.dtype), axes=1)


def _gray_matrix():
    """[3, 3] with every column the luma weights: image @ it = three equal luma channels."""
    return tf.tile(tf.constant(GRAY_WEIGHTS, tf.float32)[:, None], [1, 3])


def grayscale(image):
    """Luma, keeping the channel count (three equal channels for RGB)."""
    if channel_count(image) == 1:
        return image
    return _color_matrix(image, _gray_matrix())


def blend(degenerate, image, factor):
    """PIL ImageEnhance / torchvision _blend: factor 0 -> degenerate, 1 -> image, clipped to [0, 1]."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 1.0)


def adjust_brightness(image, factor):
    return tf.clip_by_value(image * factor, 0.0, 1.0)


def adjust_contrast(image, factor):
    """Blend with the mean luma (a scalar: the luma of the mean colour, the same by linearity)."""
    mean_color = tf.reduce_mean(image, axis=[0, 1])
    mean = mean_color[0] if channel_count(image) == 1 else tf.tensordot(mean_color, GRAY_WEIGHTS, axes=1)
    return tf.clip_by_value(factor * image + (1.0 - factor) * mean, 0.0, 1.0)


def adjust_saturation(image, factor):
    """Blend with the luma image: the colour matrix factor * I + (1 - factor) * gray."""
    if channel_count(image) == 1:
        return image
    matrix = factor * tf.eye(3) + (1.0 - factor) * _gray_matrix()
    return tf.clip_by_value(_color_matrix(image, matrix), 0.0, 1.0)


def adjust_hue(image, delta):
    return tf.clip_by_value(tf.image.adjust_hue(image, delta), 0.0, 1.0)


def color_jitter(image, seed, strength=(0.4, 0.4, 0.4, 0.1)):
    """Brightness, contrast, saturation, hue with torchvision's ranges, applied in a random order."""
    brightness, contrast, saturation, hue = strength
    seeds = split_seed(seed, 5)
    factors = [uniform(seeds[0], max(0.0, 1 - brightness), 1 + brightness),
               uniform(seeds[1], max(0.0, 1 - contrast), 1 + contrast),
               uniform(seeds[2], max(0.0, 1 - saturation), 1 + saturation),
               uniform(seeds[3], -hue, hue)]
    ops = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue]
    if channel_count(image) == 1:  # Saturation and hue are meaningless for one channel.
        ops, factors = ops[:2], factors[:2]
    order = tf.argsort(uniform(seeds[4], shape=[len(ops)]))
    for position in range(len(ops)):
        branches = [lambda op=op, f=f, img=image: op(img, f) for op, f in zip(ops, factors)]
        image = tf.switch_case(order[position], branches)
    return image


def random_color_jitter(image, seed, strength=(0.4, 0.4, 0.4, 0.1), prob=0.8):
    apply_seed, jitter_seed = split_seed(seed, 2)
    return tf.cond(uniform(apply_seed) < prob, lambda: color_jitter(image, jitter_seed, strength),
                   lambda: image)


def random_grayscale(image, seed, prob=0.2):
    if channel_count(image) == 1:
        return image
    # Choosing the matrix, not the image, computes one matmul instead of a luma image and a select.
    return _color_matrix(image, tf.where(uniform(seed) < prob, _gray_matrix(), tf.eye(3)))


def gaussian_blur(image, sigma, kernel_size: int):
    """Separable Gaussian blur with reflect padding (kernel_size odd)."""
    radius = kernel_size // 2
    x = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    kernel = tf.exp(-0.5 * tf.square(x / sigma))
    kernel /= tf.reduce_sum(kernel)
    channels = channel_count(image)
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    blurred = tf.nn.depthwise_conv2d(padded, vertical, [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, horizontal, [1, 1, 1, 1], "VALID")
    return blurred[0]


def random_gaussian_blur(image, seed, prob=0.5, sigma=BLUR_SIGMA):
    """SimCLR's blur: kernel about 10% of the image side, sigma uniform in `sigma`, applied with `prob`."""
    apply_seed, sigma_seed = split_seed(seed, 2)
    kernel_size = blur_kernel_size(image.shape[0])
    return tf.cond(uniform(apply_seed) < prob,
                   lambda: gaussian_blur(image, uniform(sigma_seed, *sigma), kernel_size), lambda: image)
