"""The host input pipeline against its floor (JPEG decoding alone), with a per-stage profile, in one run.

    python benchmarks/input_pipeline_bench.py --seconds 6 --rounds 5          # the table of BENCHMARKS.md
    python benchmarks/input_pipeline_bench.py --variants decode,simclr_device --rounds 3
    python benchmarks/input_pipeline_bench.py --policy randaugment            # the product rows for another policy

The images are synthetic 375x500 JPEGs (genscl_jax.tools.synthetic_photos: ImageNet's typical size; there is no
ImageNet on most machines), held in memory, so every figure is decode + augment, not disk. Each variant is one
tf.data pipeline with the training pipeline's options (tf_pipeline.pipeline_options) over those bytes:

- `read`: the examples alone (slicing the bytes, batching the labels): the pipeline's own overhead;
- `decode`: tf.io.decode_jpeg and nothing else: the floor of any pipeline that decodes each image once
  (`decode_fast_idct`, `decode_simple_upsampling`: the same with libjpeg's fast integer IDCT, or with chroma
  upsampled by replication; both change the pixels);
- `PATH+STAGE`: the stage profile of the two-view simclr preprocessing, cumulative (each row adds STAGE to the row
  before, so a stage's cost is the difference of two rows), built from genscl_jax.data.augment's own functions:
  `float32+...` is the path as it was before views left the host as uint8 (every stage on the host), `uint8+...`
  the host's share now (colour, blur and normalisation on the device), `uint8_window+...` the same with only each
  view's crop window decoded (tf.image.decode_and_crop_jpeg, once per view);
- options against `uint8+batch`, the same views made another way: `uint8_union_window+batch` decodes only the
  bounding box of both views' windows, `uint8_slice_flip+batch` flips while cutting the crop (a stride -1 slice),
  `uint8_quantized_resize+batch` resizes with TF's fixed-point uint8 kernel; `float32+colour_graycond` is the
  float32 path to its colour stage with grayscale in a tf.cond instead of a matmul by the identity;
- `simclr_host`, `simclr_device`: the product, tf_pipeline.make_train_preprocess for imagenet2012 (colour jitter,
  grayscale and blur on the host; or on the device, `device_color_augment`), batched as training batches it;
  `before_simclr_device` is what the product's host did with colour on the device before views left it as uint8
  (crop, resize, flip and blur in float32; `float32+batch` is its host-colour path).

The variants are timed in rounds, in a rotating order, each for `--seconds` on a fresh iterator after two warm-up
batches (so none computes while another is timed): on a shared machine all see the same load. Per variant: images
per CPU-second this process used (all threads; the figure the other load moves least), wall images/s, the
fraction of the decode floor (the median over rounds of the ratio to `decode` in the same round), the host CPU
cores 2,000 images/s would need, and the bytes per image that leave the host.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from typing import Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from genscl_jax.data import augment_color, augment_geometry, registry, tf_pipeline, views  # noqa: E402
from genscl_jax.tools import synthetic_photos  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = registry.get("imagenet2012").info.mean, registry.get("imagenet2012").info.std
TARGET_IMAGES_PER_S = 2000  # about what one H100 consumes on the ImageNet recipe (BENCHMARKS.md section 5)


# ----------------------------------------------------------------------------------------------------------
# The stage profile: two views through the first k stages of the simclr path, from augment's own functions.

PROFILE_STAGES = {
    # stage -> what it adds; applied in this order (the order of augment.augment_view)
    "float32": ("decode", "crop", "resize", "flip", "colour", "blur", "normalise", "batch"),
    "uint8": ("decode", "crop", "resize", "flip", "batch"),
    # The option of decoding only each view's crop window (tf.image.decode_and_crop_jpeg), once per view.
    "uint8_window": ("window_decode", "resize", "flip", "batch"),
}


def _profile_view(jpeg, image, seed, stages: Sequence[str], image_size: int, dtype: str):
    crop_seed, flip_seed, jitter_seed, gray_seed, blur_seed, _ = augment_geometry.split_seed(seed, 6)
    if "window_decode" in stages:
        offset, size = augment_geometry.random_resized_crop_window(crop_seed, tf.image.extract_jpeg_shape(jpeg))
        view = tf.image.decode_and_crop_jpeg(jpeg, tf.concat([offset, size], 0), channels=3)
    elif "crop" in stages:
        offset, size = augment_geometry.random_resized_crop_window(crop_seed, tf.shape(image))
        view = tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([size, [-1]], 0))
        view.set_shape([None, None, image.shape[-1]])
    else:
        return image
    if "resize" in stages:
        if dtype == "uint8":
            view = augment_geometry.resize_to_uint8(view, image_size)
        else:
            view = augment_geometry.resize(view, image_size, antialias=False)
    if "flip" in stages:
        view = augment_geometry.random_flip(view, flip_seed)
    if "colour" in stages:
        view = augment_color.random_grayscale(augment_color.random_color_jitter(view, jitter_seed), gray_seed)
    if "colour_graycond" in stages:  # The option of grayscale in a tf.cond: no matmul for the 80% left in colour.
        view = augment_color.random_color_jitter(view, jitter_seed)
        view = tf.cond(tf.random.stateless_uniform([], seed=gray_seed) < 0.2, lambda: augment_color.grayscale(view),
                       lambda: view)
    if "blur" in stages:
        view = augment_color.random_gaussian_blur(view, blur_seed, 0.5)
    if "normalise" in stages:
        view = _host_normalize(view, IMAGENET_MEAN, IMAGENET_STD)
    return view


def _host_normalize(image, mean, std):
    """(image - mean) / std on the host, as the float32 path did it (a [3, 3] matmul: TF's broadcasting is slower)."""
    scale = tf.linalg.diag(1.0 / tf.constant(std, tf.float32))
    return tf.nn.bias_add(tf.tensordot(image, scale, axes=1), -tf.constant(mean) / tf.constant(std))


def profile_preprocess(stages: Sequence[str], *, image_size: int, num_views: int, dtype: str):
    """example -> {"out": ...}: the views after `stages`, or (without "batch") one pixel of each, so that batching
    costs nothing and every op before it still runs."""
    def preprocess(example):
        seed = tf.stack([example["key"], tf.constant(7, tf.int64)])
        if not stages:
            return {"out": example["label"]}
        jpeg = example["image"]
        image = tf.io.decode_jpeg(jpeg, channels=3) if "decode" in stages else None
        views = [_profile_view(jpeg, image, view_seed, stages, image_size, dtype)
                 for view_seed in augment_geometry.split_seed(seed, num_views)]
        if "batch" in stages:
            return {"out": tf.stack(views)}
        return {"out": tf.stack([tf.cast(view[0, 0, 0], tf.float32) for view in views])}
    return preprocess


def product_preprocess(*, policy: str, image_size: int, num_views: int, device_color_augment: bool):
    entry = registry.get("imagenet2012")
    plan = views.resolve(policy, entry, image_size=image_size, device_color_augment=device_color_augment)
    preprocess = tf_pipeline.make_train_preprocess(entry, plan=plan, num_views=num_views, seed=0)
    return lambda example: {"out": preprocess(example)["image"]}


# ----------------------------------------------------------------------------------------------------------
# Options measured against the uint8 path (uint8+batch): each makes the same two crop + flip views another way.


def _windows(shape, seed, num_views):
    """(offset, size, flip seed) of each view, as augment_view draws them."""
    found = []
    for view_seed in augment_geometry.split_seed(seed, num_views):
        crop_seed, flip_seed = augment_geometry.split_seed(view_seed, 6)[:2]
        found.append((*augment_geometry.random_resized_crop_window(crop_seed, shape), flip_seed))
    return found


def union_window_views(example, *, image_size: int, num_views: int):
    """Decode only the bounding box of the views' crop windows (once), then cut each view from it."""
    jpeg, seed = example["image"], tf.stack([example["key"], tf.constant(7, tf.int64)])
    windows = _windows(tf.image.extract_jpeg_shape(jpeg), seed, num_views)
    top = tf.reduce_min(tf.stack([offset for offset, _, _ in windows]), 0)
    bottom = tf.reduce_max(tf.stack([offset + size for offset, size, _ in windows]), 0)
    region = tf.image.decode_and_crop_jpeg(jpeg, tf.concat([top, bottom - top], 0), channels=3)
    views = []
    for offset, size, flip_seed in windows:
        crop = tf.slice(region, tf.concat([offset - top, [0]], 0), tf.concat([size, [-1]], 0))
        crop.set_shape([None, None, 3])
        views.append(augment_geometry.random_flip(augment_geometry.resize_to_uint8(crop, image_size), flip_seed))
    return {"out": tf.stack(views)}


def slice_flip_views(example, *, image_size: int, num_views: int):
    """Flip while cutting the crop (a strided slice with stride -1), instead of reversing the resized view."""
    image = tf.io.decode_jpeg(example["image"], channels=3)
    width, views = tf.shape(image)[1], []
    for offset, size, flip_seed in _windows(tf.shape(image), tf.stack([example["key"], tf.constant(7, tf.int64)]),
                                            num_views):
        (y, x), (h, w) = tf.unstack(offset), tf.unstack(size)
        flip = tf.random.stateless_uniform([], seed=flip_seed) < 0.5
        begin = tf.stack([y, tf.where(flip, x + w - 1, x), 0])
        end = tf.stack([y + h, tf.where(flip, tf.where(x > 0, x - 1, -width - 1), x + w), 3])
        crop = tf.strided_slice(image, begin, end, tf.stack([1, tf.where(flip, -1, 1), 1]))
        crop.set_shape([None, None, 3])
        views.append(augment_geometry.resize_to_uint8(crop, image_size))
    return {"out": tf.stack(views)}


def quantized_resize_views(example, *, image_size: int, num_views: int):
    """TF's fixed-point uint8 resize (QuantizedResizeBilinear) instead of the float kernel and a rounding pass."""
    image = tf.io.decode_jpeg(example["image"], channels=3)
    views = []
    for offset, size, flip_seed in _windows(tf.shape(image), tf.stack([example["key"], tf.constant(7, tf.int64)]),
                                            num_views):
        crop = tf.bitcast(tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([size, [-1]], 0)), tf.quint8)
        resized = tf.raw_ops.QuantizedResizeBilinear(images=crop[None], size=[image_size, image_size], min=0.0,
                                                     max=255.0, half_pixel_centers=True)[0][0]
        views.append(augment_geometry.random_flip(tf.bitcast(resized, tf.uint8), flip_seed))
    return {"out": tf.stack(views)}


def variants(*, policy: str, image_size: int, num_views: int) -> dict[str, Callable]:
    kwargs = dict(image_size=image_size, num_views=num_views)
    found = {"read": profile_preprocess((), dtype="float32", **kwargs)}
    for path, stages in PROFILE_STAGES.items():
        for end in range(1, len(stages) + 1):
            name = "decode" if stages[:end] == ("decode",) else f"{path}+{stages[end - 1]}"
            found.setdefault(name, profile_preprocess(stages[:end], dtype=path.split("_")[0], **kwargs))
    # Decoding options: libjpeg's fast integer IDCT, and chroma upsampling by replication (both change pixels).
    for name, decode_options in (("decode_fast_idct", {"dct_method": "INTEGER_FAST"}),
                                 ("decode_simple_upsampling", {"fancy_upscaling": False})):
        found[name] = lambda example, o=decode_options: {
            "out": tf.shape(tf.io.decode_jpeg(example["image"], channels=3, **o))[0]}
    for name, option in (("uint8_union_window+batch", union_window_views), ("uint8_slice_flip+batch", slice_flip_views),
                         ("uint8_quantized_resize+batch", quantized_resize_views)):
        found[name] = functools.partial(option, **kwargs)
    found["float32+colour_graycond"] = profile_preprocess(PROFILE_STAGES["float32"][:4] + ("colour_graycond",),
                                                          dtype="float32", **kwargs)
    # The product before views left the host as uint8, with colour on the device: crop, resize, flip, blur, float32.
    found["before_simclr_device"] = profile_preprocess(("decode", "crop", "resize", "flip", "blur", "batch"),
                                                       dtype="float32", **kwargs)
    for device in (False, True):
        found[f"{policy}_{'device' if device else 'host'}"] = product_preprocess(
            policy=policy, device_color_augment=device, **kwargs)
    return found


# ----------------------------------------------------------------------------------------------------------
# Timing.


def _dataset(jpegs: list[bytes], preprocess: Callable, batch_size: int):
    examples = tf.data.Dataset.from_tensor_slices(tf.constant(jpegs)).enumerate().repeat()
    examples = examples.map(lambda index, jpeg: {"image": jpeg, "label": index % 1000, "key": index,
                                                 "epoch": tf.constant(0, tf.int64)})
    ds = examples.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(tf_pipeline.pipeline_options())


def time_slice(ds, *, batch_size: int, seconds: float) -> dict:
    """One timed slice on a fresh iterator: (images, CPU seconds, wall seconds, bytes per image)."""
    batches = iter(ds.as_numpy_iterator())
    for _ in range(2):  # Warm-up: autotuning, the first tracing of a new iterator.
        batch = next(batches)
    count, start, start_cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        next(batches)
        count += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    del batches  # Stops its background work before the next variant is timed.
    return {"images": count * batch_size, "cpu_s": cpu, "wall_s": wall, "bytes_per_image": batch["out"].nbytes
            / batch_size if batch["out"].ndim > 2 else 0}


def run(*, names: Sequence[str] | None = None, num_images: int = 256, source_size=(375, 500),
        image_size: int = 224, batch_size: int = 64, num_views: int = 2, policy: str = "simclr",
        seconds: float = 6.0, rounds: int = 5, seed: int = 0, log=print) -> dict:
    """Times the variants (all, or `names`) in `rounds` rotating rounds; returns per-variant medians and rounds."""
    jpegs = synthetic_photos.jpegs(num_images, *source_size, seed=seed)
    table = variants(policy=policy, image_size=image_size, num_views=num_views)
    names = list(names or table)
    if "decode" not in names:
        names.insert(0, "decode")  # The floor every fraction is measured against.
    unknown = sorted(set(names) - set(table))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {sorted(table)}")
    datasets = {name: _dataset(jpegs, table[name], batch_size) for name in names}
    per_round = {name: [] for name in names}
    load = [os.getloadavg()[0]]
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            per_round[name].append(time_slice(datasets[name], batch_size=batch_size, seconds=seconds))
        load.append(os.getloadavg()[0])
        log(f"round {round_index + 1}/{rounds} done, load average {load[-1]:.1f}")
    results = {}
    for name in names:
        rates = [r["images"] / r["cpu_s"] for r in per_round[name]]
        floor = [r["images"] / r["cpu_s"] for r in per_round["decode"]]
        per_cpu_s = statistics.median(rates)
        results[name] = {
            "images_per_cpu_second": per_cpu_s,
            "images_per_s": statistics.median(r["images"] / r["wall_s"] for r in per_round[name]),
            "fraction_of_decode_floor": statistics.median(a / b for a, b in zip(rates, floor)),
            "host_cores_per_2000_images_per_s": TARGET_IMAGES_PER_S / per_cpu_s,
            "cpu_us_per_image": 1e6 / per_cpu_s,
            "bytes_per_image": per_round[name][0]["bytes_per_image"],
        }
    return {"variants": results, "rounds": per_round, "load_average": load,
            "settings": dict(num_images=num_images, source_size=list(source_size), image_size=image_size,
                             batch_size=batch_size, num_views=num_views, policy=policy, seconds=seconds,
                             rounds=rounds, cores=len(os.sched_getaffinity(0)))}


def markdown(result: dict) -> str:
    rows = ["| variant | images per CPU-second | fraction of decode floor | CPU us per image | host cores per "
            "2,000 images/s | wall images/s | bytes per image to the device |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, v in result["variants"].items():
        sent = f"{v['bytes_per_image']:,.0f}" if v["bytes_per_image"] else "-"
        rows.append(f"| {name} | {v['images_per_cpu_second']:.0f} | {v['fraction_of_decode_floor']:.3f} | "
                    f"{v['cpu_us_per_image']:.0f} | {v['host_cores_per_2000_images_per_s']:.1f} | "
                    f"{v['images_per_s']:.0f} | {sent} |")
    load = result["load_average"]
    rows.append(f"\nload average (1 min) from {min(load):.1f} to {max(load):.1f}; settings {result['settings']}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="", help="comma-separated names (default: all)")
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_views", type=int, default=2)
    parser.add_argument("--policy", default="simclr", choices=views.POLICIES)
    parser.add_argument("--seconds", type=float, default=6.0, help="per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default="", help="write the results (every round) here")
    args = parser.parse_args(argv)
    result = run(names=[n for n in args.variants.split(",") if n] or None, num_images=args.num_images,
                 image_size=args.image_size, batch_size=args.batch_size, num_views=args.num_views,
                 policy=args.policy, seconds=args.seconds, rounds=args.rounds)
    print(markdown(result), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
