"""Synthetic photographs for timing the input pipeline where there is no ImageNet: JPEGs in memory or as a folder.

Smooth random colour fields with fine noise, encoded at quality 90, so their sizes (about 60 kB at 375x500) and
decode costs resemble photographs'. benchmarks/input_pipeline_bench.py times the host pipeline on them;
`python -m genscl_jax.bench --input jpeg` feeds the pretraining step from an image folder of them. Needs
TensorFlow (imported when called).
"""

from __future__ import annotations

import os

IMAGENET_SIZE = (375, 500)  # height, width of a typical ImageNet photo


def jpegs(num_images: int, height: int = IMAGENET_SIZE[0], width: int = IMAGENET_SIZE[1], seed: int = 0
          ) -> list[bytes]:
    """`num_images` encoded JPEGs, each a function of (seed, index) only."""
    import tensorflow as tf

    encoded = []
    for index in range(num_images):
        coarse = tf.random.stateless_uniform([1, max(height // 16, 1), max(width // 16, 1), 3], seed=[seed, index])
        image = tf.image.resize(coarse, [height, width], method="bicubic")[0]
        image += 0.05 * tf.random.stateless_normal([height, width, 3], seed=[seed + 1, index])
        pixels = tf.cast(tf.clip_by_value(image, 0.0, 1.0) * 255, tf.uint8)
        encoded.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return encoded


def write_image_folder(root: str, *, num_images: int, num_classes: int = 10, size=IMAGENET_SIZE, seed: int = 0
                       ) -> str:
    """An image_folder dataset at `root` (train/CLASS/*.jpg, test/CLASS/*.jpg with one image per class), written
    once: a folder that already holds the training images is reused as it is. Returns `root`."""
    train = os.path.join(root, "train")
    if os.path.isdir(train) and sum(len(files) for _, _, files in os.walk(train)) >= num_images:
        return root
    for split, count, split_seed in (("train", num_images, seed), ("test", num_classes, seed + 2)):
        for index, jpeg in enumerate(jpegs(count, *size, seed=split_seed)):
            folder = os.path.join(root, split, f"class_{index % num_classes:03d}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"{index:06d}.jpg"), "wb") as f:
                f.write(jpeg)
    return root
