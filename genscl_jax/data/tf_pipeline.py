"""tfds -> tf.data input pipelines: multi-view training batches and padded evaluation batches.

Training (`create_train_iterator`): each process reads its own disjoint share of the split
(tfds.split_for_jax_process), shuffles it per epoch, and emits batches of `num_views` augmented views per
image. All randomness is stateless and keyed by (seed, epoch, example): the shuffle order by (seed, epoch,
process), every augmentation by (seed, epoch, tfds example id). Epochs are chained inside tf.data, so an
iterator started at `start_step=k` yields exactly the batches an uninterrupted one yields from step k on,
epoch boundaries included. Resuming replays at most one epoch of (undecoded) reads to rebuild the shuffle.

Evaluation (`create_eval_iterator`): one deterministic pass; every example is seen exactly once across
processes; the last batches are padded with `mask == False` examples so that every process yields the same
number of full batches (a multi-host step needs the same number of calls everywhere).

This module and `augment` import TensorFlow and tfds when imported. Only genscl_jax.data's reading functions
import this module, so the synthetic path, the bench and config validation never load TensorFlow.
"""

from __future__ import annotations

import importlib
import os
from typing import Iterator

import tensorflow as tf
import tensorflow_datasets as tfds

from genscl_jax.data import augment, registry
from genscl_jax.data.registry import DatasetInfo

# The datasets this pipeline reads: the registry's tfds entries.
DATASETS = {name: entry for name, entry in registry.DATASETS.items() if entry.reader == "tfds"}
_MAX_EPOCHS = 1 << 40  # "Forever": the train iterator never ends.
_LARGE_SHUFFLE_BUFFER = 10_000  # Encoded ImageNet JPEGs, ~110 kB each: ~1 GB per process.


def _entry(name: str) -> registry.Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)} (or 'synthetic', which "
                         "does not go through this pipeline)")
    return DATASETS[name]


def get_dataset_info(name: str) -> DatasetInfo:
    return _entry(name).info


def normalization_stats(dataset: str, channels: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) matching the channel count the pipeline emits (a gray dataset tiled to RGB repeats them)."""
    info = get_dataset_info(dataset)
    info = info.with_channels(_output_channels(info, channels))
    return info.mean, info.std


def _output_channels(info: DatasetInfo, channels: int | None) -> int:
    if channels is None or channels == info.channels:
        return info.channels
    if info.channels == 1 and channels == 3:
        return 3
    raise ValueError(f"channels={channels} is not supported for a {info.channels}-channel dataset "
                     "(only None, the native count, or 3 for a one-channel dataset)")


def num_examples(dataset: str, split: str, data_dir: str | None = None) -> int:
    """Examples in a split: read from the prepared dataset when data_dir holds it, else the known size."""
    info = get_dataset_info(dataset)
    split = info.split_name(split)
    if data_dir is not None:
        builder = _builder(dataset, data_dir)
        if builder.is_prepared():
            return builder.info.splits[split].num_examples
    known = {info.train_split: info.num_train, info.test_split: info.num_test}
    if split not in known:
        raise ValueError(f"size of split {split!r} of {dataset} is only known once it is prepared in a data_dir")
    return known[split]


# ----------------------------------------------------------------------------------------------------------
# Builders: which tfds builder serves a dataset, and preparing it (with errors that say what to do).


def _builder(dataset: str, data_dir: str | None):
    """The tfds builder of `dataset`, prepared or not: the registry's builder hook, else tfds.builder."""
    entry = _entry(dataset)
    if not entry.builder:
        return tfds.builder(entry.tfds_name, data_dir=data_dir)
    module, function = entry.builder.split(":")
    return getattr(importlib.import_module(module), function)(entry.tfds_name, data_dir)


def _default_data_dir(data_dir: str | None) -> str:
    return data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def manual_download_message(dataset: str, data_dir: str | None) -> str:
    entry, root = _entry(dataset), _default_data_dir(data_dir)
    manual_dir = os.path.join(root, "downloads", "manual")
    return (f"{dataset} is not prepared in {root} and tfds cannot download it: put "
            f"{' and '.join(entry.manual_files)} in {manual_dir}, then rerun, or run "
            f"`tfds build {entry.tfds_name} --data_dir {root}`; see "
            f"https://www.tensorflow.org/datasets/catalog/{entry.tfds_name} for where to get them.")


def load_builder(dataset: str, data_dir: str | None):
    """The prepared tfds builder of `dataset` (prepares it when needed; never downloads Fashion-MNIST)."""
    builder = _builder(dataset, data_dir)
    if not builder.is_prepared():
        _prepare(builder, dataset, data_dir)
    return builder


def _prepare(builder, dataset: str, data_dir: str | None) -> None:
    try:
        builder.download_and_prepare()
    except FileNotFoundError:
        raise  # The offline Fashion-MNIST builder's message already says what to do.
    except Exception as error:  # tfds raises many kinds (AssertionError for a missing manual dir, ...).
        manual_files = _entry(dataset).manual_files
        if manual_files:
            manual_dir = os.path.join(_default_data_dir(data_dir), "downloads", "manual")
            if not all(tf.io.gfile.exists(os.path.join(manual_dir, f)) for f in manual_files):
                raise FileNotFoundError(manual_download_message(dataset, data_dir)) from error
        raise RuntimeError(
            f"could not prepare {builder.name} in {_default_data_dir(data_dir)} ({type(error).__name__}: "
            f"{error}); without network access, run `tfds build {builder.name}` on a machine that has it "
            "and copy the data_dir here.") from error


def _split_size(builder, split: str) -> int:
    """Examples in `split`, from the dataset's cardinality (exact for prepared tfds data and for mocks)."""
    cardinality = int(builder.as_dataset(split=split).cardinality())
    if cardinality >= 0:
        return cardinality
    return builder.info.splits[split].num_examples


def _process_split(split: str, process_index: int, process_count: int, drop_remainder: bool):
    if process_count == 1:
        return split
    return tfds.split_for_jax_process(split, process_index=process_index, process_count=process_count,
                                      drop_remainder=drop_remainder)


def _process_layout(global_batch_size: int, process_index: int | None, process_count: int | None):
    """(process_index, process_count, local_batch); defaults from JAX's multi-process runtime."""
    if process_index is None or process_count is None:
        import jax
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    if global_batch_size % process_count:
        raise ValueError(f"global batch {global_batch_size} is not divisible by {process_count} processes")
    return process_index, process_count, global_batch_size // process_count


# ----------------------------------------------------------------------------------------------------------
# Stateless seeds. A run seed, a salt per use, and the data they depend on are folded into one [2] seed.

_SHUFFLE_SALT, _FILES_SALT, _AUGMENT_SALT = 1, 2, 3


def _derived_seed(seed: int, salt: int, *data):
    key = tf.constant([seed, salt], tf.int64)
    for value in data:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64))
    return key


def _int_seed(key):
    """An int64 scalar seed for tf.data ops (shuffle) that only take one, drawn statelessly from `key`."""
    return tf.random.stateless_uniform([], seed=key, minval=None, maxval=None, dtype=tf.int64)


def _example_key(tfds_id):
    """A stable int64 identity of an example: its tfds id (shard file + index) hashed with FarmHash.

    Unlike a position it does not depend on how the split is divided among processes.
    """
    return tf.strings.to_hash_bucket_fast(tfds_id, 1 << 62)


# ----------------------------------------------------------------------------------------------------------
# Per-example preprocessing.


def _small_image(image, info: DatasetInfo, image_size: int, channels: int):
    """CIFAR / Fashion-MNIST uint8 -> float32 [0, 1] at image_size (28 px padded to 32), channels tiled."""
    image = augment.pad_or_resize(image, image_size)
    if channels != info.channels:
        image = tf.tile(image, [1, 1, channels])
    return image


def _jpeg_center_crop(jpeg, image_size: int):
    """ImageNet evaluation: resize the shorter side to image_size * 256/224, centre-crop image_size.

    Done as crop-then-resize (the same window: the central 224/256 of the shorter side) so that only the
    window is decoded.
    """
    shape = tf.image.extract_jpeg_shape(jpeg)
    height, width = shape[0], shape[1]
    crop = tf.cast(tf.round(tf.cast(tf.minimum(height, width), tf.float32) * (224 / 256)), tf.int32)
    window = tf.stack([(height - crop + 1) // 2, (width - crop + 1) // 2, crop, crop])
    return augment.resize(tf.image.decode_and_crop_jpeg(jpeg, window, channels=3), image_size)


def _eval_image(image, dataset: str, info: DatasetInfo, image_size: int, channels: int):
    if _entry(dataset).stored_as_jpeg:
        return _jpeg_center_crop(image, image_size)
    return _small_image(image, info, image_size, channels)


def make_train_preprocess(dataset: str, *, image_size: int, policy: str, num_views: int, seed: int,
                          device_color_augment: bool = False, channels: int | None = None,
                          blur_prob: float | None = None):
    """fn({"image", "label", "key", "epoch"}) -> {"image": [V, S, S, C] float32, "label": int32}.

    The image is a JPEG string for ImageNet (decoded once, shared by the views) and uint8 otherwise.
    """
    info = get_dataset_info(dataset)
    channels = _output_channels(info, channels)
    mean, std = normalization_stats(dataset, channels)
    is_jpeg = _entry(dataset).stored_as_jpeg
    if blur_prob is None:  # SimCLR / MoCo v2 blur ImageNet views; at 32 px blur only destroys them.
        blur_prob = 0.5 if is_jpeg and policy == "simclr" else 0.0
    # ImageNet linear evaluation trains on torchvision's default crop scale (SupCon's recipe).
    crop_scale = (0.08, 1.0) if is_jpeg and policy == "crop_flip" else (0.2, 1.0)
    view_kwargs = dict(policy=policy, image_size=image_size, color=not device_color_augment,
                       blur_prob=blur_prob, crop_scale=crop_scale)

    def preprocess(example):
        example_seed = _derived_seed(seed, _AUGMENT_SALT, example["epoch"], example["key"])
        if is_jpeg and policy == "none":
            views = tf.stack([_jpeg_center_crop(example["image"], image_size)] * num_views)
        else:
            image = (tf.io.decode_jpeg(example["image"], channels=3) if is_jpeg
                     else _small_image(example["image"], info, image_size, channels))
            views = augment.augment_views(image, example_seed, num_views, **view_kwargs)
        if not device_color_augment:  # Otherwise the device normalises after its colour jitter.
            views = augment.normalize(views, mean, std)
        return {"image": views, "label": tf.cast(example["label"], tf.int32)}

    return preprocess


# ----------------------------------------------------------------------------------------------------------
# Training iterator.


def _read_split(builder, split: str, *, encoded: bool, shuffle_seed=None):
    """Examples {"image", "label", "key"} of `split`; files in a seeded order when shuffle_seed is given.

    encoded=True leaves images as encoded bytes, for the parallel map to decode (JPEG datasets).
    """
    read_config = tfds.ReadConfig(add_tfds_id=True, shuffle_seed=shuffle_seed, try_autocache=False)
    ds = builder.as_dataset(split=split, shuffle_files=shuffle_seed is not None, read_config=read_config,
                            decoders={"image": tfds.decode.SkipDecoding()} if encoded else None)
    return ds.map(lambda ex: {"image": ex["image"], "label": ex["label"], "key": _example_key(ex["tfds_id"])},
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _epoch_reader(builder, split: str, *, in_memory: bool, encoded: bool, seed: int, process_index: int,
                  shuffle_buffer: int | None = None):
    """(read_epoch(epoch) -> this process's examples of one epoch in a (seed, epoch)-shuffled order, size).

    in_memory (small datasets): decoded once, cached in memory, fully shuffled every epoch. Otherwise
    (ImageNet): re-read every epoch with the files in a (seed, epoch)-seeded order, then buffer-shuffled.
    """
    size = int(_read_split(builder, split, encoded=encoded).cardinality())
    if size <= 0:
        raise ValueError(f"split {split!r} gives process {process_index} no training examples")
    cached = _read_split(builder, split, encoded=encoded).cache() if in_memory else None
    buffer = shuffle_buffer or (size if in_memory else min(size, _LARGE_SHUFFLE_BUFFER))

    @tf.autograph.experimental.do_not_convert  # tfds internals are plain Python, not for autograph.
    def read_epoch(epoch):
        if in_memory:
            examples = cached
        else:  # tfds takes the files' shuffle seed as a tensor, so it can depend on the epoch.
            files_seed = _int_seed(_derived_seed(seed, _FILES_SALT, epoch, process_index))
            examples = _read_split(builder, split, encoded=encoded, shuffle_seed=files_seed)
        shuffle_seed = _int_seed(_derived_seed(seed, _SHUFFLE_SALT, epoch, process_index))
        examples = examples.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
        return examples.map(lambda ex: {**ex, "epoch": epoch})

    return read_epoch, size


def pipeline_options():
    """The tf.data options of both iterators (benchmarks/input_pipeline_bench.py times with them too)."""
    options = tf.data.Options()
    options.deterministic = True  # Parallel maps keep their input order: batches are reproducible.
    # Parallelism comes from the parallel map; intra-op threads would only contend with it.
    options.threading.max_intra_op_parallelism = 1
    return options


def create_train_iterator(*, dataset: str, data_dir: str | None, global_batch_size: int, image_size: int,
                          policy: str, num_views: int, seed: int, start_step: int = 0,
                          process_index: int | None = None, process_count: int | None = None,
                          device_color_augment: bool = False, channels: int | None = None,
                          blur_prob: float | None = None, shuffle_buffer: int | None = None
                          ) -> Iterator[dict]:
    """Endless numpy batches {"image": float32 [b, V, S, S, C], "label": int32 [b]}, b = global / processes.

    Batches run on across epoch boundaries (no example is dropped at an epoch's end), so step k starts at
    example k * b of this process's stream; that is how `start_step` resumes exactly. Images are normalised
    unless device_color_augment, when the host only crops / flips (and RandAugments or blurs where the
    policy says so) and emits [0, 1] images for genscl_jax.data.device_augment.color_augment.
    """
    if policy not in augment.POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; choose from {augment.POLICIES}")
    info = get_dataset_info(dataset)
    process_index, process_count, local_batch = _process_layout(global_batch_size, process_index, process_count)
    builder = load_builder(dataset, data_dir)
    # Equal shares (the < process_count leftover examples are dropped) keep the hosts' epochs in step.
    split = _process_split(info.train_split, process_index, process_count, drop_remainder=True)
    large = _entry(dataset).stored_as_jpeg
    read_epoch, epoch_size = _epoch_reader(builder, split, in_memory=not large, encoded=large, seed=seed,
                                           process_index=process_index, shuffle_buffer=shuffle_buffer)
    start_epoch, offset = divmod(start_step * local_batch, epoch_size)
    ds = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(read_epoch)
    ds = ds.skip(offset)  # Before the map: skipped examples are read, never decoded or augmented.
    preprocess = make_train_preprocess(
        dataset, image_size=image_size, policy=policy, num_views=num_views, seed=seed,
        device_color_augment=device_color_augment, channels=channels, blur_prob=blur_prob)
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(pipeline_options()).as_numpy_iterator()


# ----------------------------------------------------------------------------------------------------------
# Evaluation iterator.


def create_eval_iterator(*, dataset: str, data_dir: str | None, global_batch_size: int, image_size: int,
                         split: str = "test", process_index: int | None = None, process_count: int | None = None,
                         channels: int | None = None) -> Iterator[dict]:
    """One pass of numpy batches {"image": float32 [b, S, S, C], "label": int32 [b], "mask": bool [b]}.

    Processes read disjoint shares that differ by at most one example; each pads its share with mask=False
    examples up to the same number of full batches, so no example is dropped or repeated.
    """
    info = get_dataset_info(dataset)
    process_index, process_count, local_batch = _process_layout(global_batch_size, process_index, process_count)
    channels = _output_channels(info, channels)
    mean, std = normalization_stats(dataset, channels)
    builder = load_builder(dataset, data_dir)
    split = info.split_name(split)
    largest_share = -(-_split_size(builder, split) // process_count)
    num_batches = -(-largest_share // local_batch)

    ds = _read_split(builder, _process_split(split, process_index, process_count, drop_remainder=False),
                     encoded=_entry(dataset).stored_as_jpeg)
    share = int(ds.cardinality())
    if not 0 <= share <= largest_share:
        raise ValueError(f"process {process_index} got {share} examples of {split!r}, expected at most "
                         f"{largest_share}")

    def preprocess(example):
        image = augment.normalize(_eval_image(example["image"], dataset, info, image_size, channels), mean, std)
        return {"image": image, "label": tf.cast(example["label"], tf.int32), "mask": tf.constant(True)}

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padding = {"image": tf.zeros([image_size, image_size, channels], tf.float32),
               "label": tf.constant(0, tf.int32), "mask": tf.constant(False)}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(num_batches * local_batch - share))
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(pipeline_options()).as_numpy_iterator()

