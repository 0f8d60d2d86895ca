"""Throughput of the host input pipeline: ImageNet-style JPEG decode + multi-view augmentation, on this machine.

    python benchmarks/input_pipeline_bench.py --seconds 20 --num_images 256 --batch_size 64
    python benchmarks/input_pipeline_bench.py --policy randaugment --num_views 2

The images are synthetic JPEGs (there is no ImageNet on most machines), preprocessed by the training pipeline's
own function (genscl_jax.data.tf_pipeline.make_train_preprocess for imagenet2012) with its tf.data options. Each
run times colour jitter on the host, then with `device_color_augment` (the host only decodes, crops, flips, blurs).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from genscl_jax.data import registry, tf_pipeline  # noqa: E402


def _write_synthetic_jpegs(directory: str, num_images: int, height: int, width: int, seed: int) -> list[str]:
    """Smooth random images with some fine noise, so JPEG sizes and decode costs resemble photographs."""
    paths = []
    for index in range(num_images):
        coarse = tf.random.stateless_uniform([1, height // 16, width // 16, 3], seed=[seed, index])
        image = tf.image.resize(coarse, [height, width], method="bicubic")[0]
        image += 0.05 * tf.random.stateless_normal([height, width, 3], seed=[seed + 1, index])
        jpeg = tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0.0, 1.0) * 255, tf.uint8), quality=90)
        paths.append(os.path.join(directory, f"{index:05d}.jpg"))
        tf.io.write_file(paths[-1], jpeg)
    return paths


def time_input_pipeline(*, num_images: int = 256, source_size: tuple[int, int] = (375, 500),
                        image_size: int = 224, batch_size: int = 64, num_views: int = 2, policy: str = "simclr",
                        device_color_augment: bool = False, seconds: float = 20.0, seed: int = 0) -> dict:
    """Times the ImageNet training preprocessing (JPEG decode + `num_views` augmented views) on this host.

    The JPEGs are written to a temporary directory and read back (their bytes are cached, so the figure is
    decode + augment, not disk). Returns images/s (source images; each yields num_views views) overall, per
    CPU core available to this process, and per CPU-second this process actually used: on a shared machine
    the last one is the figure that does not depend on what else is running.
    """
    with tempfile.TemporaryDirectory() as directory:
        paths = _write_synthetic_jpegs(directory, num_images, *source_size, seed)
        ds = tf.data.Dataset.from_tensor_slices(paths).enumerate()
        ds = ds.map(lambda index, path: {"image": tf.io.read_file(path), "label": index % 1000,
                                         "key": index, "epoch": tf.constant(0, tf.int64)}).cache().repeat()
        preprocess = tf_pipeline.make_train_preprocess(registry.get("imagenet2012"), image_size=image_size,
                                                       policy=policy, num_views=num_views, seed=seed,
                                                       device_color_augment=device_color_augment)
        ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        batches = iter(ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
                       .with_options(tf_pipeline.pipeline_options()).as_numpy_iterator())
        for _ in range(2):  # Warm-up: tracing, autotuning, filling the cache.
            next(batches)
        count, start, start_cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            next(batches)
            count += 1
        elapsed, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    images_per_s = count * batch_size / elapsed
    return {"images_per_s": images_per_s, "images_per_s_per_core": images_per_s / cores, "cores": cores,
            "images_per_cpu_second": count * batch_size / cpu_seconds,
            "views_per_image": num_views, "device_color_augment": device_color_augment, "policy": policy,
            "image_size": image_size, "source_size": source_size}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_views", type=int, default=2)
    parser.add_argument("--policy", default="simclr", choices=registry.POLICIES)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    for device_color_augment in (False, True):
        result = time_input_pipeline(num_images=args.num_images, image_size=args.image_size,
                                     batch_size=args.batch_size, num_views=args.num_views, policy=args.policy,
                                     device_color_augment=device_color_augment, seconds=args.seconds)
        print(f"policy={args.policy} views={args.num_views} size={args.image_size} "
              f"device_color_augment={device_color_augment}: {result['images_per_s']:.1f} images/s on "
              f"{result['cores']} cores = {result['images_per_s_per_core']:.1f} images/s per core; "
              f"{result['images_per_cpu_second']:.1f} images per CPU-second used", flush=True)


if __name__ == "__main__":
    main()
