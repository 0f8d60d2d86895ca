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

`dataset` is a registry.Dataset entry (genscl_jax.data resolves it, and makes those of image folders and tfds:NAME);
`channels` is the count to emit, by the registry's one rule (DatasetInfo.with_channels).

What is done to each view is a views.ViewPlan's (the policy resolved once); this module reads its fields, never the
policy. Images leave as uint8 pixels, a quarter of float32's bytes; the steps convert and normalise them with the
dataset's statistics (genscl_jax.data.device_preprocess), and do the plan's device share (simclr's colour jitter,
grayscale and blur with `device_color_augment`).

This module and `augment` import TensorFlow and tfds when imported. Only genscl_jax.data's reading functions
import this module, so the synthetic path, the bench and config validation never load TensorFlow.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from genscl_jax.data import augment, registry, tfds_builders
from genscl_jax.data.augment_geometry import pad_or_resize, resize, to_uint8
from genscl_jax.data.registry import DatasetInfo
from genscl_jax.data.views import ViewPlan

_MAX_EPOCHS = 1 << 40  # "Forever": the train iterator never ends.
_LARGE_SHUFFLE_BUFFER = 10_000  # Encoded ImageNet JPEGs, ~110 kB each: ~1 GB per process.


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


def _emitted_channels(info: DatasetInfo, channels: int | None) -> int:
    """The channel count of the images this pipeline emits for `channels` (None: the dataset's own)."""
    return info.with_channels(channels).channels


def _small_image(image, info: DatasetInfo, image_size: int, channels: int):
    """CIFAR / Fashion-MNIST uint8 -> uint8 at image_size (28 px padded to 32), channels tiled."""
    image = pad_or_resize(image, image_size)
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
    return to_uint8(resize(tf.image.decode_and_crop_jpeg(jpeg, window, channels=3), image_size))


def _central_square(image, image_size: int):
    """Images of any size and shape: their central square, resized to image_size (no stretching, nothing padded)."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.minimum(height, width)
    square = tf.image.crop_to_bounding_box(image, (height - side) // 2, (width - side) // 2, side, side)
    return to_uint8(resize(square, image_size))


def _eval_image(image, entry: registry.Dataset, image_size: int, channels: int):
    if entry.stored_as_jpeg:
        return _jpeg_center_crop(image, image_size)
    if entry.variable_size:
        return _central_square(_decode_any(image, channels), image_size)
    return _small_image(image, entry.info, image_size, channels)


def make_train_preprocess(dataset: registry.Dataset, *, plan: ViewPlan, num_views: int, seed: int,
                          channels: int | None = None):
    """fn({"image", "label", "key", "epoch"}) -> {"image": [V, S, S, C] uint8, "label": int32}: the host's half of
    `plan` (the device's is device_preprocess.for_plan of the same plan).

    The image is encoded (JPEG for ImageNet, JPEG or PNG for variable-size datasets; decoded once, shared by the
    views) or uint8.
    """
    entry, info = dataset, dataset.info
    channels = _emitted_channels(info, channels)
    is_jpeg, variable, image_size = entry.stored_as_jpeg, entry.variable_size, plan.image_size

    def preprocess(example):
        example_seed = _derived_seed(seed, _AUGMENT_SALT, example["epoch"], example["key"])
        if not plan.random:  # The evaluation view: no stretching, no padding beyond the small images' own.
            views = tf.stack([_eval_image(example["image"], entry, image_size, channels)] * num_views)
        else:
            if is_jpeg:
                image = tf.io.decode_jpeg(example["image"], channels=3)
            elif variable:
                image = _decode_any(example["image"], channels)
            else:
                image = _small_image(example["image"], info, image_size, channels)
            views = augment.augment_views(image, example_seed, num_views, plan)
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


def _folder_split(entry: registry.Dataset, split: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The files and labels of an image folder's split that are read (the training split's selection only)."""
    files, labels = entry.folder.splits[split].files, entry.folder.splits[split].labels
    if split == entry.info.train_split and entry.train_selection is not None:
        keep = entry.train_selection.keys  # positions in the file list, sorted
        files, labels = tuple(files[i] for i in keep), tuple(labels[i] for i in keep)
    return files, labels


def _selected(examples, selection):
    """Only the examples whose key is in `selection` (a subset.Selection of example keys), in reading order."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(selection.keys, tf.int64),
                                            tf.ones([len(selection)], tf.int64)), default_value=0)
    return examples.filter(lambda ex: table.lookup(ex["key"]) > 0)


def _selected_share(builder, entry: registry.Dataset, *, encoded: bool, process_index: int, process_count: int,
                    drop_remainder: bool):
    """(this process's examples of the training split's selection, how many): the whole split read in its fixed
    order, the selected examples kept and dealt out, every process_count-th from process_index."""
    selection = entry.train_selection
    total = len(selection) // process_count * process_count if drop_remainder else len(selection)
    examples = _selected(_read_split(builder, entry.info.train_split, encoded=encoded,
                                     keys=(entry.image_key, entry.label_key)), selection)
    share = len(range(process_index, total, process_count))
    examples = examples.take(total).shard(process_count, process_index)
    return examples.apply(tf.data.experimental.assert_cardinality(share)), share


def _selected_epoch_reader(builder, entry: registry.Dataset, *, encoded: bool, seed: int, process_index: int,
                           process_count: int, shuffle_buffer: int | None):
    """_epoch_reader for a selection of the training split (config.train_subset): read once and cached in memory
    (encoded when the dataset is streamed: a labelled subset is small), fully shuffled every epoch."""
    examples, size = _selected_share(builder, entry, encoded=encoded, process_index=process_index,
                                     process_count=process_count, drop_remainder=True)
    if size <= 0:
        raise ValueError(f"the training subset gives process {process_index} no training examples")
    cached = examples.cache()

    def read_epoch(epoch):
        return _shuffled_epoch(cached, shuffle_buffer or size, seed, epoch, process_index)

    return read_epoch, size


def _shuffled_epoch(examples, buffer: int, seed: int, epoch, process_index: int):
    """Epoch `epoch` of cached examples: shuffled in a (seed, epoch, process) order, each tagged with its epoch."""
    shuffle_seed = _int_seed(_derived_seed(seed, _SHUFFLE_SALT, epoch, process_index))
    shuffled = examples.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    return shuffled.map(lambda ex: {**ex, "epoch": epoch})


def _folder_share(entry: registry.Dataset, split: str, process_index: int, process_count: int,
                  drop_remainder: bool) -> tuple[list[str], np.ndarray]:
    """This process's files and labels of an image folder's split: every process_count-th, from process_index."""
    files, labels = _folder_split(entry, split)
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
        return _with_file_contents(_shuffled_epoch(listed, len(files), seed, epoch, process_index))

    return read_epoch, len(files)


def _train_epochs(entry: registry.Dataset, data_dir: str | None, *, seed: int, process_index: int,
                  process_count: int, shuffle_buffer: int | None):
    """(read_epoch, epoch size) of this process's share of the training split."""
    if entry.reader == "image_folder":
        files, labels = _folder_share(entry, entry.info.train_split, process_index, process_count,
                                      drop_remainder=True)
        return _folder_epoch_reader(files, labels, seed=seed, process_index=process_index)
    builder = tfds_builders.load_builder(entry, data_dir)
    streamed = entry.stored_as_jpeg or entry.variable_size
    if entry.train_selection is not None:
        return _selected_epoch_reader(builder, entry, encoded=streamed, seed=seed, process_index=process_index,
                                      process_count=process_count, shuffle_buffer=shuffle_buffer)
    # Equal shares (the < process_count leftover examples are dropped) keep the hosts' epochs in step.
    split = _process_split(entry.info.train_split, process_index, process_count, drop_remainder=True)
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


def create_train_iterator(*, dataset: registry.Dataset, data_dir: str | None, global_batch_size: int,
                          plan: ViewPlan, num_views: int, seed: int, start_step: int = 0,
                          process_index: int | None = None, process_count: int | None = None,
                          channels: int | None = None, shuffle_buffer: int | None = None) -> Iterator[dict]:
    """Endless numpy batches {"image": uint8 [b, V, S, S, C], "label": int32 [b]}, b = global / processes.

    Batches run on across epoch boundaries (no example is dropped at an epoch's end), so step k starts at
    example k * b of this process's stream; that is how `start_step` resumes exactly. The views are the host's half
    of `plan`; the step does the rest.
    """
    entry = dataset
    process_index, process_count, local_batch = _process_layout(global_batch_size, process_index, process_count)
    read_epoch, epoch_size = _train_epochs(entry, data_dir, seed=seed, process_index=process_index,
                                           process_count=process_count, shuffle_buffer=shuffle_buffer)
    start_epoch, offset = divmod(start_step * local_batch, epoch_size)
    ds = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(read_epoch)
    ds = ds.skip(offset)  # Before the map: skipped examples are read, never decoded or augmented.
    preprocess = make_train_preprocess(entry, plan=plan, num_views=num_views, seed=seed, channels=channels)
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(pipeline_options()).as_numpy_iterator()


# ----------------------------------------------------------------------------------------------------------
# Evaluation iterator.


def _eval_examples(entry: registry.Dataset, data_dir: str | None, split: str, process_index: int,
                   process_count: int, spread: int = 0):
    """(this process's examples of `split`, in a fixed order; the split's size). spread: a tfds split of more
    examples is read as an evenly spread sample of `spread` of them (see _spread_sample)."""
    if entry.reader == "image_folder":
        files, labels = _folder_share(entry, split, process_index, process_count, drop_remainder=False)
        return _with_file_contents(_read_files(files, labels)), len(_folder_split(entry, split)[0])
    builder = tfds_builders.load_builder(entry, data_dir)
    encoded = entry.stored_as_jpeg or entry.variable_size
    if split == entry.info.train_split and entry.train_selection is not None:
        examples, _ = _selected_share(builder, entry, encoded=encoded, process_index=process_index,
                                      process_count=process_count, drop_remainder=False)
        return examples, len(entry.train_selection)
    if spread and spread < tfds_builders.split_size(builder, split):
        return _spread_sample(builder, entry, split, spread, encoded, process_index, process_count), spread
    examples = _read_split(builder, _process_split(split, process_index, process_count, drop_remainder=False),
                           encoded=encoded, keys=(entry.image_key, entry.label_key))
    return examples, tfds_builders.split_size(builder, split)


_SPREAD_PARTS = 64


def _spread_sample(builder, entry: registry.Dataset, split: str, size: int, encoded: bool, process_index: int,
                   process_count: int):
    """This process's share of `size` examples spread evenly over a tfds split: the first examples of each of up to
    64 equal parts. tfds shuffles a dataset when it prepares it, so the classes come near their own shares, and only
    `size` examples are read (a class-balanced sample would need a pass over the whole split: ImageNet's 1.28M)."""
    parts = tfds.even_splits(split, n=min(_SPREAD_PARTS, size))
    counts = [len(range(i, size, len(parts))) for i in range(len(parts))]
    examples = None
    for part, count in zip(parts, counts):
        taken = _read_split(builder, part, encoded=encoded, keys=(entry.image_key, entry.label_key)).take(count)
        examples = taken if examples is None else examples.concatenate(taken)
    share = len(range(process_index, size, process_count))
    examples = examples.shard(process_count, process_index)
    return examples.apply(tf.data.experimental.assert_cardinality(share))


def split_keys_and_labels(entry: registry.Dataset, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(example keys, labels) of a tfds training split in its fixed reading order; images are read, not decoded."""
    builder = tfds_builders.load_builder(entry, data_dir)
    examples = _read_split(builder, entry.info.train_split, encoded=True, keys=(entry.image_key, entry.label_key))
    examples = examples.map(lambda ex: {"key": ex["key"], "label": tf.cast(ex["label"], tf.int64)})
    keys, labels = [], []
    for batch in examples.batch(8192).prefetch(2).as_numpy_iterator():
        keys.append(batch["key"])
        labels.append(batch["label"])
    return np.concatenate(keys), np.concatenate(labels)


def create_eval_iterator(*, dataset: registry.Dataset, data_dir: str | None, global_batch_size: int,
                         image_size: int, split: str = "test", process_index: int | None = None,
                         process_count: int | None = None, channels: int | None = None,
                         spread: int = 0) -> Iterator[dict]:
    """One pass of numpy batches {"image": uint8 [b, S, S, C], "label": int32 [b], "mask": bool [b]}.

    Processes read disjoint shares that differ by at most one example; each pads its share with mask=False
    examples up to the same number of full batches, so no example is dropped or repeated. spread: read a tfds
    split larger than that as an evenly spread sample of `spread` examples (a bounded kNN bank).
    """
    entry, info = dataset, dataset.info
    process_index, process_count, local_batch = _process_layout(global_batch_size, process_index, process_count)
    channels = _emitted_channels(info, channels)
    split = info.split_name(split)
    ds, total = _eval_examples(entry, data_dir, split, process_index, process_count, spread)
    largest_share = -(-total // process_count)
    num_batches = -(-largest_share // local_batch)
    share = int(ds.cardinality())
    if not 0 <= share <= largest_share:
        raise ValueError(f"process {process_index} got {share} examples of {split!r}, expected at most "
                         f"{largest_share}")

    def preprocess(example):
        image = _eval_image(example["image"], entry, image_size, channels)
        return {"image": image, "label": tf.cast(example["label"], tf.int32), "mask": tf.constant(True)}

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padding = {"image": tf.zeros([image_size, image_size, channels], tf.uint8),
               "label": tf.constant(0, tf.int32), "mask": tf.constant(False)}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(num_batches * local_batch - share))
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(pipeline_options()).as_numpy_iterator()
