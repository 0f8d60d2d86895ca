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

Image folders (reader "image_folder") take the same path with their file list in place of a tfds split: each
process reads its share of the files, every epoch in a (seed, epoch)-shuffled order, keyed by file name.

`dataset` is a registry name or a registry.Dataset entry (genscl_jax.data makes those of image folders and tfds:NAME).

This module and `augment` import TensorFlow and tfds when imported. Only genscl_jax.data's reading functions
import this module, so the synthetic path, the bench and config validation never load TensorFlow.
"""

from __future__ import annotations

import difflib
import importlib
import os
from typing import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from genscl_jax.data import augment, network_probe, registry
from genscl_jax.data.registry import DataError, DataFilesMissing, DatasetInfo

# The built-in datasets this pipeline reads: the registry's tfds entries.
DATASETS = {name: entry for name, entry in registry.DATASETS.items() if entry.reader == "tfds"}
_MAX_EPOCHS = 1 << 40  # "Forever": the train iterator never ends.
_LARGE_SHUFFLE_BUFFER = 10_000  # Encoded ImageNet JPEGs, ~110 kB each: ~1 GB per process.


def _entry(dataset: str | registry.Dataset) -> registry.Dataset:
    if isinstance(dataset, registry.Dataset):
        return dataset
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(DATASETS)} (or 'synthetic', which "
                         "does not go through this pipeline)")
    return DATASETS[dataset]


def get_dataset_info(dataset: str | registry.Dataset) -> DatasetInfo:
    return _entry(dataset).info


def normalization_stats(dataset: str | registry.Dataset,
                        channels: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
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


def num_examples(dataset: str | registry.Dataset, split: str, data_dir: str | None = None) -> int:
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


def make_builder(tfds_name: str, data_dir: str | None, hook: str = ""):
    """The tfds builder of `tfds_name`, prepared or not: `hook`'s ("module:function", a registry entry's builder),
    else tfds.builder's. A name tfds does not know is a DataError."""
    if hook:
        module, function = hook.split(":")
        return getattr(importlib.import_module(module), function)(tfds_name, data_dir)
    try:
        return tfds.builder(tfds_name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        close = difflib.get_close_matches(tfds_name.split("/")[0], tfds.list_builders(), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise DataError(f"tfds has no dataset {tfds_name!r}{hint}; its names are listed at "
                        "https://www.tensorflow.org/datasets/catalog/overview") from None
    except ValueError as error:  # A config tfds does not know (NAME/CONFIG), a bad version, ...
        raise DataError(f"tfds cannot make {tfds_name!r}: {_first_line(error)}") from None


def _builder(dataset: str | registry.Dataset, data_dir: str | None):
    entry = _entry(dataset)
    return make_builder(entry.tfds_name, data_dir, entry.builder)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def default_data_dir(data_dir: str | None) -> str:
    return data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def manual_download_message(dataset: str | registry.Dataset, data_dir: str | None) -> str:
    entry, root = _entry(dataset), default_data_dir(data_dir)
    manual_dir = os.path.join(root, "downloads", "manual")
    return (f"{entry.tfds_name} is not prepared in {root} and tfds cannot download it: put "
            f"{' and '.join(entry.manual_files)} in {manual_dir}, then rerun, or run "
            f"`tfds build {entry.tfds_name} --data_dir {root}`; see "
            f"https://www.tensorflow.org/datasets/catalog/{entry.tfds_name} for where to get them.")


def _not_prepared_message(builder, data_dir: str | None, why: str, entry: registry.Dataset | None = None) -> str:
    root = default_data_dir(data_dir)
    # A way without a download (Fashion-MNIST's Debian package) comes first.
    first = f"{entry.install_hint}, or " if entry is not None and entry.install_hint else ""
    return (f"{builder.name} is not prepared in {root} and cannot be prepared here ({why}); {first}on a machine "
            f"with network access run `tfds build {builder.name} --data_dir DIR`, copy DIR here and pass "
            "--config.data_dir=DIR")


def _manual_files_present(entry: registry.Dataset, data_dir: str | None) -> bool:
    manual_dir = os.path.join(default_data_dir(data_dir), "downloads", "manual")
    return all(tf.io.gfile.exists(os.path.join(manual_dir, f)) for f in entry.manual_files)


def check_can_prepare(builder, data_dir: str | None, entry: registry.Dataset | None = None) -> None:
    """DataError at once when an unprepared dataset cannot be prepared from here: its manual files (a registry
    entry's) are missing, or its download server does not answer (network_probe), where tfds would spend minutes
    retrying.

    A run calls this once, up front (genscl_jax.data.prepare); the readers do not, so tfds's test mocks, which
    leave every builder unprepared, never meet the probe.
    """
    if builder.is_prepared():
        return
    if entry is not None and entry.manual_files:
        if not _manual_files_present(entry, data_dir):
            raise DataFilesMissing(manual_download_message(entry, data_dir))
        return
    urls = sorted(builder.url_infos or {})
    reason = network_probe.unreachable_reason(urls[0]) if urls else None
    if reason:
        raise DataError(_not_prepared_message(builder, data_dir, f"its download server {reason}", entry))


def load_builder(dataset: str | registry.Dataset, data_dir: str | None):
    """The prepared tfds builder of `dataset` (prepares it when needed; never downloads Fashion-MNIST)."""
    entry = _entry(dataset)
    return prepare_builder(_builder(entry, data_dir), data_dir, entry)


def prepare_builder(builder, data_dir: str | None, entry: registry.Dataset | None = None):
    """`builder`, prepared (downloaded and converted by tfds when it is not yet); failures are one-line DataErrors."""
    if builder.is_prepared():
        return builder
    try:
        builder.download_and_prepare()
    except DataError:
        raise  # The offline Fashion-MNIST builder's: it names the file and the fix.
    except Exception as error:  # tfds raises many kinds (AssertionError for a missing manual dir, ...).
        if entry is not None and entry.manual_files and not _manual_files_present(entry, data_dir):
            raise DataFilesMissing(manual_download_message(entry, data_dir)) from error
        raise DataError(_not_prepared_message(builder, data_dir, f"{type(error).__name__}: {_first_line(error)}",
                                              entry)) from error
    return builder


def split_size(builder, split: str) -> int:
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


def _decode_any(encoded, channels: int):
    """A JPEG or PNG of any size -> uint8 [H, W, channels] (gray replicated to RGB, alpha left out)."""
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
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


def _central_square(image, image_size: int):
    """Images of any size and shape: their central square, resized to image_size (no stretching, nothing padded)."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.minimum(height, width)
    square = tf.image.crop_to_bounding_box(image, (height - side) // 2, (width - side) // 2, side, side)
    return augment.resize(square, image_size)


def _eval_image(image, entry: registry.Dataset, image_size: int, channels: int):
    if entry.stored_as_jpeg:
        return _jpeg_center_crop(image, image_size)
    if entry.variable_size:
        return _central_square(_decode_any(image, channels), image_size)
    return _small_image(image, entry.info, image_size, channels)


def make_train_preprocess(dataset: str | registry.Dataset, *, image_size: int, policy: str, num_views: int,
                          seed: int, device_color_augment: bool = False, channels: int | None = None,
                          blur_prob: float | None = None):
    """fn({"image", "label", "key", "epoch"}) -> {"image": [V, S, S, C] float32, "label": int32}.

    The image is encoded (JPEG for ImageNet, JPEG or PNG for variable-size datasets; decoded once, shared by the
    views) or uint8.
    """
    entry = _entry(dataset)
    info = entry.info
    channels = _output_channels(info, channels)
    mean, std = normalization_stats(entry, channels)
    is_jpeg, variable = entry.stored_as_jpeg, entry.variable_size
    if blur_prob is None:  # SimCLR / MoCo v2 blur ImageNet-sized views; at 32 px blur only destroys them.
        blur_prob = 0.5 if policy == "simclr" and (is_jpeg or variable and image_size > 64) else 0.0
    # ImageNet linear evaluation trains on torchvision's default crop scale (SupCon's recipe).
    crop_scale = (0.08, 1.0) if is_jpeg and policy == "crop_flip" else (0.2, 1.0)
    view_kwargs = dict(policy=policy, image_size=image_size, color=not device_color_augment,
                       blur_prob=blur_prob, crop_scale=crop_scale)

    def preprocess(example):
        example_seed = _derived_seed(seed, _AUGMENT_SALT, example["epoch"], example["key"])
        if policy == "none" and (is_jpeg or variable):  # The evaluation view: no stretching, no padding.
            views = tf.stack([_eval_image(example["image"], entry, image_size, channels)] * num_views)
        else:
            if is_jpeg:
                image = tf.io.decode_jpeg(example["image"], channels=3)
            elif variable:
                image = _decode_any(example["image"], channels)
            else:
                image = _small_image(example["image"], info, image_size, channels)
            views = augment.augment_views(image, example_seed, num_views, **view_kwargs)
        if not device_color_augment:  # Otherwise the device normalises after its colour jitter.
            views = augment.normalize(views, mean, std)
        return {"image": views, "label": tf.cast(example["label"], tf.int32)}

    return preprocess


# ----------------------------------------------------------------------------------------------------------
# Reading: a tfds split, or an image folder's files.


def _read_split(builder, split: str, *, encoded: bool, shuffle_seed=None, keys=("image", "label")):
    """Examples {"image", "label", "key"} of `split`; files in a seeded order when shuffle_seed is given.

    encoded=True leaves images as encoded bytes, for the parallel map to decode (large datasets). `keys`: the
    features holding the image and the label.
    """
    image_key, label_key = keys
    read_config = tfds.ReadConfig(add_tfds_id=True, shuffle_seed=shuffle_seed, try_autocache=False)
    ds = builder.as_dataset(split=split, shuffle_files=shuffle_seed is not None, read_config=read_config,
                            decoders={image_key: tfds.decode.SkipDecoding()} if encoded else None)
    return ds.map(lambda ex: {"image": ex[image_key], "label": ex[label_key], "key": _example_key(ex["tfds_id"])},
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _epoch_reader(builder, split: str, *, in_memory: bool, encoded: bool, seed: int, process_index: int,
                  shuffle_buffer: int | None = None, keys=("image", "label")):
    """(read_epoch(epoch) -> this process's examples of one epoch in a (seed, epoch)-shuffled order, size).

    in_memory (small datasets): decoded once, cached in memory, fully shuffled every epoch. Otherwise
    (ImageNet): re-read every epoch with the files in a (seed, epoch)-seeded order, then buffer-shuffled.
    """
    size = int(_read_split(builder, split, encoded=encoded, keys=keys).cardinality())
    if size <= 0:
        raise ValueError(f"split {split!r} gives process {process_index} no training examples")
    cached = _read_split(builder, split, encoded=encoded, keys=keys).cache() if in_memory else None
    buffer = shuffle_buffer or (size if in_memory else min(size, _LARGE_SHUFFLE_BUFFER))

    @tf.autograph.experimental.do_not_convert  # tfds internals are plain Python, not for autograph.
    def read_epoch(epoch):
        if in_memory:
            examples = cached
        else:  # tfds takes the files' shuffle seed as a tensor, so it can depend on the epoch.
            files_seed = _int_seed(_derived_seed(seed, _FILES_SALT, epoch, process_index))
            examples = _read_split(builder, split, encoded=encoded, shuffle_seed=files_seed, keys=keys)
        shuffle_seed = _int_seed(_derived_seed(seed, _SHUFFLE_SALT, epoch, process_index))
        examples = examples.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
        return examples.map(lambda ex: {**ex, "epoch": epoch})

    return read_epoch, size


def _folder_share(entry: registry.Dataset, split: str, process_index: int, process_count: int,
                  drop_remainder: bool) -> tuple[list[str], np.ndarray]:
    """This process's files and labels of an image folder's split: every process_count-th, from process_index."""
    files, labels = entry.folder.splits[split].files, entry.folder.splits[split].labels
    if drop_remainder:  # Equal shares, as tfds.split_for_jax_process(drop_remainder=True) gives.
        files, labels = files[:len(files) // process_count * process_count], labels[:len(files)]
    return list(files[process_index::process_count]), np.asarray(labels[process_index::process_count], np.int64)


def _read_files(files: list[str], labels: np.ndarray):
    """{"path", "label", "key"} of each file, in the given order; nothing is read yet."""
    ds = tf.data.Dataset.from_tensor_slices({"path": tf.constant(files, tf.string), "label": labels})
    return ds.map(lambda ex: {**ex, "key": _example_key(ex["path"])})


def _with_file_contents(examples):
    """Reads each file: {"image": its encoded bytes, "label", "key", ...}; the parallel map decodes them."""
    def read(example):
        example = dict(example)
        return {"image": tf.io.read_file(example.pop("path")), **example}
    return examples.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _folder_epoch_reader(files: list[str], labels: np.ndarray, *, seed: int, process_index: int):
    """_epoch_reader for an image folder: the file list (names only, cheap to hold) fully shuffled every epoch."""
    if not files:
        raise ValueError(f"the image folder gives process {process_index} no training examples")
    listed = _read_files(files, labels).cache()

    def read_epoch(epoch):
        shuffle_seed = _int_seed(_derived_seed(seed, _SHUFFLE_SALT, epoch, process_index))
        examples = listed.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=False)
        return _with_file_contents(examples.map(lambda ex: {**ex, "epoch": epoch}))

    return read_epoch, len(files)


def _train_epochs(entry: registry.Dataset, data_dir: str | None, *, seed: int, process_index: int,
                  process_count: int, shuffle_buffer: int | None):
    """(read_epoch, epoch size) of this process's share of the training split."""
    if entry.reader == "image_folder":
        files, labels = _folder_share(entry, entry.info.train_split, process_index, process_count,
                                      drop_remainder=True)
        return _folder_epoch_reader(files, labels, seed=seed, process_index=process_index)
    builder = load_builder(entry, data_dir)
    # Equal shares (the < process_count leftover examples are dropped) keep the hosts' epochs in step.
    split = _process_split(entry.info.train_split, process_index, process_count, drop_remainder=True)
    streamed = entry.stored_as_jpeg or entry.variable_size
    return _epoch_reader(builder, split, in_memory=not streamed, encoded=streamed, seed=seed,
                         process_index=process_index, shuffle_buffer=shuffle_buffer,
                         keys=(entry.image_key, entry.label_key))


def pipeline_options():
    """The tf.data options of both iterators (benchmarks/input_pipeline_bench.py times with them too)."""
    options = tf.data.Options()
    options.deterministic = True  # Parallel maps keep their input order: batches are reproducible.
    # Parallelism comes from the parallel map; intra-op threads would only contend with it.
    options.threading.max_intra_op_parallelism = 1
    return options


# ----------------------------------------------------------------------------------------------------------
# Training iterator.


def create_train_iterator(*, dataset: str | registry.Dataset, data_dir: str | None, global_batch_size: int,
                          image_size: int, policy: str, num_views: int, seed: int, start_step: int = 0,
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
    entry = _entry(dataset)
    process_index, process_count, local_batch = _process_layout(global_batch_size, process_index, process_count)
    read_epoch, epoch_size = _train_epochs(entry, data_dir, seed=seed, process_index=process_index,
                                           process_count=process_count, shuffle_buffer=shuffle_buffer)
    start_epoch, offset = divmod(start_step * local_batch, epoch_size)
    ds = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(read_epoch)
    ds = ds.skip(offset)  # Before the map: skipped examples are read, never decoded or augmented.
    preprocess = make_train_preprocess(
        entry, image_size=image_size, policy=policy, num_views=num_views, seed=seed,
        device_color_augment=device_color_augment, channels=channels, blur_prob=blur_prob)
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(pipeline_options()).as_numpy_iterator()


# ----------------------------------------------------------------------------------------------------------
# Evaluation iterator.


def _eval_examples(entry: registry.Dataset, data_dir: str | None, split: str, process_index: int,
                   process_count: int):
    """(this process's examples of `split`, in a fixed order; the split's size)."""
    if entry.reader == "image_folder":
        files, labels = _folder_share(entry, split, process_index, process_count, drop_remainder=False)
        return _with_file_contents(_read_files(files, labels)), len(entry.folder.splits[split].files)
    builder = load_builder(entry, data_dir)
    examples = _read_split(builder, _process_split(split, process_index, process_count, drop_remainder=False),
                           encoded=entry.stored_as_jpeg or entry.variable_size, keys=(entry.image_key, entry.label_key))
    return examples, split_size(builder, split)


def create_eval_iterator(*, dataset: str | registry.Dataset, data_dir: str | None, global_batch_size: int,
                         image_size: int, split: str = "test", process_index: int | None = None,
                         process_count: int | None = None, channels: int | None = None) -> Iterator[dict]:
    """One pass of numpy batches {"image": float32 [b, S, S, C], "label": int32 [b], "mask": bool [b]}.

    Processes read disjoint shares that differ by at most one example; each pads its share with mask=False
    examples up to the same number of full batches, so no example is dropped or repeated.
    """
    entry = _entry(dataset)
    info = entry.info
    process_index, process_count, local_batch = _process_layout(global_batch_size, process_index, process_count)
    channels = _output_channels(info, channels)
    mean, std = normalization_stats(entry, channels)
    split = info.split_name(split)
    ds, total = _eval_examples(entry, data_dir, split, process_index, process_count)
    largest_share = -(-total // process_count)
    num_batches = -(-largest_share // local_batch)
    share = int(ds.cardinality())
    if not 0 <= share <= largest_share:
        raise ValueError(f"process {process_index} got {share} examples of {split!r}, expected at most "
                         f"{largest_share}")

    def preprocess(example):
        image = augment.normalize(_eval_image(example["image"], entry, image_size, channels), mean, std)
        return {"image": image, "label": tf.cast(example["label"], tf.int32), "mask": tf.constant(True)}

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padding = {"image": tf.zeros([image_size, image_size, channels], tf.float32),
               "label": tf.constant(0, tf.int32), "mask": tf.constant(False)}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(num_batches * local_batch - share))
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(pipeline_options()).as_numpy_iterator()
