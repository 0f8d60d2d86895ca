"""Geometric image ops of the host pipeline as stateless TensorFlow ops: seeds, random resized crop, flip, resize,
pad, and the one quantisation of a view to uint8.

Every random op takes an explicit `seed` (an int [2] tensor, as tf.random.stateless_* expect) and derives
sub-seeds with tf.random.experimental.stateless_split, so one example's views depend only on the seed the
pipeline gives it, derived from (run seed, epoch, example). That is what makes a resumed run see the same
data as an uninterrupted one.

Decoded images are uint8; the ops in between work on float32 in [0, 1] unless said otherwise, shape [H, W, C].
Importing this module imports TensorFlow (see genscl_jax.data.augment).
"""

from __future__ import annotations

import math

import tensorflow as tf

from genscl_jax.data.views import CROP_RATIO


def split_seed(seed, num: int):
    """`num` independent int64 [2] seeds from one (a stateless split: same input, same outputs)."""
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num))


def uniform(seed, minval=0.0, maxval=1.0, shape=()):
    """Uniform floats in [minval, maxval) of `shape`, drawn statelessly from `seed`."""
    return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval)


_CROP_TRIES = 10  # torchvision's RandomResizedCrop.get_params


def random_resized_crop_window(seed, image_shape, scale=(0.2, 1.0), ratio=CROP_RATIO):
    """Samples a crop (offset [y, x], size [h, w], int32) as torchvision's RandomResizedCrop.get_params does.

    Ten tries of (area uniform in `scale` x image area, aspect ratio log-uniform in `ratio`, sides rounded);
    the first that fits the image wins, at a uniform offset; if none fits, a centre crop as large as the image
    allows with its aspect clamped to `ratio`. The tries are drawn together (stateless, from `seed`).
    tf's sample_distorted_bounding_box, used before, samples differently (mean area 0.50 instead of 0.55 on
    32 px at scale (0.2, 1)), which is why it is not used.
    """
    shape = tf.convert_to_tensor(image_shape)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    area_seed, ratio_seed, offset_seed = split_seed(seed, 3)
    target_area = height * width * uniform(area_seed, scale[0], scale[1], shape=[_CROP_TRIES])
    aspect = tf.exp(uniform(ratio_seed, math.log(ratio[0]), math.log(ratio[1]), shape=[_CROP_TRIES]))
    tries_w = tf.round(tf.sqrt(target_area * aspect))  # Round half to even, as Python's round().
    tries_h = tf.round(tf.sqrt(target_area / aspect))
    fits = (tries_w > 0) & (tries_w <= width) & (tries_h > 0) & (tries_h <= height)
    first = tf.minimum(tf.reduce_min(tf.where(fits, tf.range(_CROP_TRIES), _CROP_TRIES)), _CROP_TRIES - 1)
    found = tf.reduce_any(fits)
    fallback_h, fallback_w = _centre_crop_size(height, width, ratio)
    h = tf.where(found, tries_h[first], fallback_h)
    w = tf.where(found, tries_w[first], fallback_w)
    # Uniform integer offsets in [0, side - crop] when found (torch.randint), centred otherwise.
    u = uniform(offset_seed, shape=[2])
    y = tf.where(found, tf.floor(u[0] * (height - h + 1)), tf.floor((height - h) / 2))
    x = tf.where(found, tf.floor(u[1] * (width - w + 1)), tf.floor((width - w) / 2))
    offset = tf.cast(tf.stack([tf.minimum(y, height - h), tf.minimum(x, width - w)]), tf.int32)
    return offset, tf.cast(tf.stack([h, w]), tf.int32)


def _centre_crop_size(height, width, ratio):
    """torchvision's fallback: the whole image, cut to the nearest allowed aspect ratio."""
    in_ratio = width / height
    too_tall, too_wide = in_ratio < min(ratio), in_ratio > max(ratio)
    h = tf.where(too_tall, tf.round(width / min(ratio)), height)
    w = tf.where(too_wide, tf.round(height * max(ratio)), width)
    return h, w


def to_uint8(image):
    """float32 [0, 1] -> uint8 [0, 255], rounded half up: the one quantisation of a view that leaves the host."""
    return tf.cast(tf.clip_by_value(image, 0.0, 1.0) * 255.0 + 0.5, tf.uint8)


def as_uint8(image):
    """A decoded image as uint8: uint8 stays, float [0, 1] is quantised (to_uint8)."""
    return image if image.dtype == tf.uint8 else to_uint8(image)


def resize(image, size: int, antialias: bool = True):
    """Square bilinear resize of a uint8 or float [0, 1] image to float32 [0, 1].

    antialias (like PIL in torchvision) matters when downscaling; it costs ~10x a plain bilinear resize,
    so training crops leave it out, as TF's SimCLR and big_vision's inception crop do. The kernels read uint8
    themselves: no float copy of the input.
    """
    scale = 255.0 if image.dtype == tf.uint8 else 1.0
    resized = tf.image.resize(image, [size, size], method="bilinear", antialias=antialias)
    return tf.clip_by_value(resized / scale, 0.0, 1.0)


def resize_to_uint8(image, size: int):
    """uint8 -> uint8 square bilinear resize (no antialias), never leaving the 0-255 scale.

    The pixels of to_uint8(resize(image, size, antialias=False)) (to float rounding at exact halves) without that
    path's division, clipping and scaling passes: bilinear weights are convex, so there is nothing to clip.
    """
    resized = tf.image.resize(image, [size, size], method="bilinear", antialias=False)
    return tf.cast(resized + 0.5, tf.uint8)


def random_crop(image, seed, scale=(0.2, 1.0), ratio=CROP_RATIO):
    """The window of torchvision's RandomResizedCrop (random_resized_crop_window), cut out; the input's dtype."""
    offset, crop_size = random_resized_crop_window(seed, tf.shape(image), scale, ratio)
    crop = tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([crop_size, [-1]], 0))
    crop.set_shape([None, None, image.shape[-1]])  # tf.slice forgets the (static) channel count.
    return crop


def random_resized_crop(image, seed, size: int, scale=(0.2, 1.0), ratio=CROP_RATIO):
    """torchvision RandomResizedCrop: crop a random window, resize it to size x size. float32 [0, 1]."""
    return resize(random_crop(image, seed, scale, ratio), size, antialias=False)


def random_flip(image, seed):
    return tf.image.stateless_random_flip_left_right(image, seed=seed)


def pad_or_resize(image, size: int):
    """Small uint8 images (Fashion-MNIST 28 px) to uint8 at `size`: zero-pad when it is 4 px larger, resize
    otherwise.

    Padding keeps the original pixels (the usual 28 -> 32 for CIFAR-shaped networks); the background of
    Fashion-MNIST is black, so zero padding adds no edge.
    """
    image = as_uint8(image)
    height = image.shape[0]
    if height == size:
        return image
    if height is not None and size - height == 4:
        return tf.pad(image, [[2, 2], [2, 2], [0, 0]])
    return to_uint8(resize(image, size))
