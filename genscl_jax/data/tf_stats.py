"""Measuring a dataset's channel count, mean and std from its images, with tf.data (decoding in parallel).

An image folder is measured once, on every image: that pass also finds the images TensorFlow cannot read, so a
damaged file is one DataError naming it before training starts, not a crash in the middle of an epoch. A tfds
dataset is measured on at most `max_images` of its training images (tfds checked its files when it prepared them).

Statistics are per channel on the 0-1 scale, over all pixels of all images (not per image), as the registry's are.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from genscl_jax.data.registry import DataError
from genscl_jax.data.stats import Stats


def _pixel_sums(image):
    """uint8 [H, W, C] (C = 1 to 4) -> (sums [3], sums of squares [3], pixels, gray?) on the 0-1 scale in RGB.

    Gray images (1 channel, or gray and alpha) count as three equal channels; alpha is left out, as
    tf.io.decode_image(channels=3) leaves it out when the pipeline reads the image.
    """
    channels = tf.shape(image)[-1]
    rgb = tf.cond(channels >= 3, lambda: image[..., :3], lambda: tf.tile(image[..., :1], [1, 1, 3]))
    pixels = tf.cast(rgb, tf.float64) / 255.0
    count = tf.cast(tf.shape(image)[0] * tf.shape(image)[1], tf.float64)
    return tf.reduce_sum(pixels, [0, 1]), tf.reduce_sum(pixels * pixels, [0, 1]), count, channels <= 2


def _combine(measured: list[tuple], channels: int) -> Stats:
    sums = np.sum([m[0] for m in measured], axis=0)
    squares = np.sum([m[1] for m in measured], axis=0)
    count = float(np.sum([m[2] for m in measured]))
    mean = sums / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return Stats(channels=channels, mean=tuple(float(m) for m in mean[:channels]),
                 std=tuple(float(s) for s in std[:channels]), num_images=len(measured))


def folder_stats(train_files: tuple[str, ...], other_files: tuple[str, ...] = ()) -> Stats:
    """Statistics of `train_files`, after checking that TensorFlow reads every file of both lists.

    Channels: 1 when every training image is gray, else 3 (gray images are then read as three equal channels).
    """
    files = list(train_files) + list(other_files)

    def measure(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)
        return (path, *_pixel_sums(image))

    ds = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string))
    ds = ds.map(measure, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()  # What fails is found below.
    measured = {path.decode(): rest for path, *rest in ds.as_numpy_iterator()}
    unreadable = [f for f in files if f not in measured]
    if unreadable:
        more = f" ({len(unreadable) - 1} more: {', '.join(unreadable[1:3])}{', ...' if len(unreadable) > 3 else ''})"
        raise DataError(f"{unreadable[0]}: cannot be read as an image (a damaged or mislabelled JPEG/PNG?); replace "
                        f"or remove it{more if len(unreadable) > 1 else ''}")
    train = [measured[f] for f in train_files]
    return _combine(train, channels=1 if all(m[3] for m in train) else 3)


def dataset_stats(images: tf.data.Dataset, channels: int, max_images: int) -> Stats:
    """Statistics of the first `max_images` uint8 images of `images`, read with `channels` channels."""
    ds = images.take(max_images).map(_pixel_sums, num_parallel_calls=tf.data.AUTOTUNE)
    measured = list(ds.as_numpy_iterator())
    if not measured:
        raise DataError("no images to measure the dataset's statistics on")
    return _combine(measured, channels)
