"""SimCLR's colour augmentation and Gaussian blur on the accelerator, in JAX (no TensorFlow).

With `device_color_augment`, the host pipeline only crops and flips its uint8 views; this module does the rest
inside the compiled step (through genscl_jax.data.device_preprocess), as BYOL's code does: on ImageNet colour
jitter and blur cost the host three times what decoding does (BENCHMARKS.md, "Host input pipeline"), and
accelerators do them almost for free.

The maths is genscl_jax.data.augment_color's (torchvision's ColorJitter, SimCLR's blur): brightness multiplies,
contrast blends with the mean luma, saturation blends with the luma image, hue rotates in HSV; the four run in
a random order per image; jitter is applied with `jitter_prob`, then grayscale with `grayscale_prob`, then a
separable Gaussian blur (reflect padding, kernel a tenth of the side, sigma uniform in views.BLUR_SIGMA) with
`blur_prob`. Every image draws its own randomness.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from genscl_jax.data.views import BLUR_SIGMA, GRAY_WEIGHTS, blur_kernel_size


def _luma(image: jax.Array) -> jax.Array:
    """[H, W, C] -> [H, W, 1]; a one-channel image is its own luma."""
    if image.shape[-1] == 1:
        return image
    return jnp.sum(image * jnp.asarray(GRAY_WEIGHTS, image.dtype), axis=-1, keepdims=True)


def _blend(degenerate, image, factor):
    return jnp.clip(degenerate + factor * (image - degenerate), 0.0, 1.0)


def _brightness(image, factor):
    return jnp.clip(image * factor, 0.0, 1.0)


def _contrast(image, factor):
    return _blend(jnp.mean(_luma(image)), image, factor)


def _saturation(image, factor):
    return _blend(_luma(image), image, factor)


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
    """[..., 3] RGB in [0, 1] -> HSV with hue in [0, 1) (the formulas of tf.image.rgb_to_hsv)."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = jnp.max(rgb, axis=-1)
    delta = value - jnp.min(rgb, axis=-1)
    saturation = jnp.where(value > 0, delta / jnp.where(value > 0, value, 1.0), 0.0)
    safe_delta = jnp.where(delta > 0, delta, 1.0)
    hue = jnp.where(value == red, (green - blue) / safe_delta,
                    jnp.where(value == green, 2.0 + (blue - red) / safe_delta, 4.0 + (red - green) / safe_delta))
    hue = jnp.where(delta > 0, jnp.mod(hue / 6.0, 1.0), 0.0)
    return jnp.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = jnp.floor(hue * 6.0)
    fraction = hue * 6.0 - sector
    sector = jnp.mod(sector, 6).astype(jnp.int32)
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * fraction)
    t = value * (1.0 - saturation * (1.0 - fraction))
    # Per sector, (r, g, b) is a fixed arrangement of (v, t, p, q).
    red = jnp.choose(sector, [value, q, p, p, t, value], mode="clip")
    green = jnp.choose(sector, [t, value, value, q, p, p], mode="clip")
    blue = jnp.choose(sector, [p, p, t, value, value, q], mode="clip")
    return jnp.stack([red, green, blue], axis=-1)


def _hue(image, delta):
    hsv = rgb_to_hsv(image)
    hsv = hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + delta, 1.0))
    return jnp.clip(hsv_to_rgb(hsv), 0.0, 1.0)


def _jitter_one(key, image, strength, jitter_prob, grayscale_prob):
    """Colour jitter + grayscale of one [H, W, C] image in [0, 1]."""
    brightness, contrast, saturation, hue = strength
    keys = jax.random.split(key, 7)

    def uniform(k, low, high):
        return jax.random.uniform(k, (), image.dtype, low, high)

    factors = [uniform(keys[0], max(0.0, 1 - brightness), 1 + brightness),
               uniform(keys[1], max(0.0, 1 - contrast), 1 + contrast),
               uniform(keys[2], max(0.0, 1 - saturation), 1 + saturation),
               uniform(keys[3], -hue, hue)]
    ops = [_brightness, _contrast, _saturation, _hue]
    if image.shape[-1] == 1:  # Saturation, hue and grayscale mean nothing for one channel.
        ops, factors = ops[:2], factors[:2]
    order = jax.random.permutation(keys[4], len(ops))
    branches = [lambda img, fs, op=op, i=i: op(img, fs[i]) for i, op in enumerate(ops)]
    jittered = image
    for position in range(len(ops)):
        jittered = jax.lax.switch(order[position], branches, jittered, factors)
    # `where`, not a blend with identity factors: with probability 0 the image is bit-exact.
    image = jnp.where(jax.random.uniform(keys[5]) < jitter_prob, jittered, image)
    if image.shape[-1] == 3:
        gray = jnp.broadcast_to(_luma(image), image.shape)
        image = jnp.where(jax.random.uniform(keys[6]) < grayscale_prob, gray, image)
    return image


def gaussian_blur(image: jax.Array, sigma: jax.Array, kernel_size: int) -> jax.Array:
    """Separable Gaussian blur of one [H, W, C] image with reflect padding (augment.gaussian_blur's maths).

    Written as a weighted sum of shifted slices: elementwise work XLA fuses, exact in float32 on any backend (a
    matmul form would run in TF32 on GPUs), and no kernel constant of the image's size.
    """
    radius = kernel_size // 2
    taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    weights = jnp.exp(-0.5 * jnp.square(taps / sigma))
    weights = weights / jnp.sum(weights)
    height, width = image.shape[:2]
    padded = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    vertical = sum(weights[k] * padded[k:k + height] for k in range(kernel_size))
    return sum(weights[k] * vertical[:, k:k + width] for k in range(kernel_size))


def _augment_one(key, image, *, color: bool, blur_prob: float, strength, jitter_prob, grayscale_prob):
    jitter_key, blur_key = jax.random.split(key)
    if color:
        image = _jitter_one(jitter_key, image, strength, jitter_prob, grayscale_prob)
    kernel_size = blur_kernel_size(image.shape[0])
    if blur_prob > 0 and kernel_size > 1:
        apply_key, sigma_key = jax.random.split(blur_key)
        sigma = jax.random.uniform(sigma_key, (), jnp.float32, *BLUR_SIGMA)
        blurred = gaussian_blur(image, sigma, kernel_size)
        image = jnp.where(jax.random.uniform(apply_key) < blur_prob, blurred, image)
    return image


def augment(rng: jax.Array, images: jax.Array, *, color: bool = True, blur_prob: float = 0.0,
            jitter_strength=(0.4, 0.4, 0.4, 0.1), jitter_prob: float = 0.8, grayscale_prob: float = 0.2) -> jax.Array:
    """Per-image random colour jitter and grayscale (`color`), then Gaussian blur with `blur_prob`. jit-compatible.

    images: float [..., H, W, C] in [0, 1], any leading axes (e.g. [B, V, H, W, C]), C = 1 or 3; every image gets
    its own randomness. Returns float32 images of the same shape, in [0, 1].
    """
    return augment_with_keys(image_keys(rng, images.shape[:-3]), images, color=color, blur_prob=blur_prob,
                             jitter_strength=jitter_strength, jitter_prob=jitter_prob, grayscale_prob=grayscale_prob)


def image_keys(rng: jax.Array, leading_shape: tuple[int, ...]) -> jax.Array:
    """The per-image keys `augment` draws from `rng` for images [*leading_shape, H, W, C], shaped
    [*leading_shape, ...] (raw keys carry a trailing (2,) of uint32 words, typed keys none)."""
    keys = jax.random.split(rng, math.prod(leading_shape))
    return keys.reshape(tuple(leading_shape) + keys.shape[1:])


def augment_with_keys(keys: jax.Array, images: jax.Array, *, color: bool = True, blur_prob: float = 0.0,
                      jitter_strength=(0.4, 0.4, 0.4, 0.1), jitter_prob: float = 0.8,
                      grayscale_prob: float = 0.2) -> jax.Array:
    """`augment` with each image's key given: `keys` indexed like the images' leading axes (image_keys), so a
    micro-batched step augments each micro-batch with its images' keys and every image gets the randomness it
    gets in the dense step."""
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got images of shape {images.shape}")
    images = images.astype(jnp.float32)
    flat = images.reshape((-1,) + images.shape[-3:])
    keys = keys.reshape((flat.shape[0],) + keys.shape[images.ndim - 3:])

    def one(key, image):
        return _augment_one(key, image, color=color, blur_prob=blur_prob, strength=jitter_strength,
                            jitter_prob=jitter_prob, grayscale_prob=grayscale_prob)

    return jax.vmap(one)(keys, flat).reshape(images.shape)
