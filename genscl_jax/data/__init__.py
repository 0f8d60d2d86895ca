"""The trainers' one door to data: a dataset's facts, and global batches on the mesh.

Which dataset exists and how it is read is in `registry`; an image folder's and a tfds:NAME dataset's entry is made
here from the data (`dataset_entry`). Importing this package imports no TensorFlow: the synthetic reader is JAX
only, and the modules that import TensorFlow and tfds (`tf_pipeline` and `augment`, `tf_stats`, `tfds_by_name`) are
imported inside the functions that read such a dataset, and nowhere else. Facts of a built-in dataset never need
them; an image folder's need them only the first time, to measure its statistics.

Of genscl_jax it imports only runtime; trainers (and runner, for `prepare`) import it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterator

import jax
from jax.sharding import Mesh

from genscl_jax.data import image_folder, registry, stats, synthetic
from genscl_jax.data.registry import DataError as DataError  # What runner turns into the one-line `error: ...`.
from genscl_jax.data.registry import DatasetInfo
from genscl_jax.runtime import parallel


def dataset_entry(config: Any) -> registry.Dataset:
    """config.dataset's registry entry; for image_folder and tfds:NAME one made from the data, once per process.

    config.data_mean / config.data_std, when given, replace the statistics (and, for those two, set the channels).
    """
    mean, std = tuple(config.data_mean), tuple(config.data_std)
    if config.dataset == registry.IMAGE_FOLDER:
        return _image_folder_entry(config.data_dir, config.train_split, config.test_split, mean, std)
    if registry.is_tfds_name(config.dataset):
        return _tfds_entry(config.dataset[len(registry.TFDS_PREFIX):], config.data_dir or None, config.train_split,
                           config.test_split, mean, std)
    entry = registry.get(config.dataset)
    if mean:
        entry = dataclasses.replace(entry, info=dataclasses.replace(entry.info, mean=mean, std=std))
    return entry


# Cached: listing a large folder (on gs://, a request per class) or preparing a tfds builder is done once per run,
# not at every evaluation.
@functools.lru_cache(maxsize=None)
def _image_folder_entry(root: str, train_split: str, test_split: str, mean: tuple[float, ...],
                        std: tuple[float, ...]) -> registry.Dataset:
    layout = image_folder.scan(root, train_split, test_split)
    if mean:
        return image_folder.entry(layout, stats.Stats(channels=len(mean), mean=mean, std=std))

    def measure() -> stats.Stats:
        from genscl_jax.data import tf_stats  # TensorFlow, only to measure: later runs read the stored result.

        train = layout.splits[layout.train_split].files
        others = tuple(f for split, s in layout.splits.items() if split != layout.train_split for f in s.files)
        return tf_stats.folder_stats(train, others)

    measured = stats.load_or_compute(image_folder.stats_path(layout), layout.fingerprint(), measure,
                                     what=f"the image folder {root}")
    return image_folder.entry(layout, measured)


@functools.lru_cache(maxsize=None)
def _tfds_entry(name: str, data_dir: str | None, train_split: str, test_split: str, mean: tuple[float, ...],
                std: tuple[float, ...]) -> registry.Dataset:
    from genscl_jax.data import tfds_by_name  # TensorFlow: only a tfds:NAME dataset loads it for its facts.

    return tfds_by_name.entry(name, data_dir, train_split=train_split, test_split=test_split, mean=mean, std=std)


def data_spec(config: Any) -> DatasetInfo:
    """The DatasetInfo of config.dataset as read with config.channels channels (0: the dataset's own)."""
    return dataset_entry(config).info.with_channels(config.channels)


def prepare(config: Any) -> None:
    """Makes config.dataset readable, or raises the one-line DataError that says why it is not, before a run starts.

    A tfds dataset that is not prepared and cannot be prepared from here (manual files missing, download server
    unreachable) fails at once rather than after minutes of download retries; an image folder is listed and
    checked, and its statistics measured or read.
    """
    builtin = registry.DATASETS.get(config.dataset)
    if registry.is_tfds_name(config.dataset) or (builtin and builtin.reader == "tfds"):
        from genscl_jax.data import tf_pipeline  # The TensorFlow boundary (see train_batches).

        data_dir = config.data_dir or None
        tfds_name = builtin.tfds_name if builtin else config.dataset[len(registry.TFDS_PREFIX):]
        builder = tf_pipeline.make_builder(tfds_name, data_dir, builtin.builder if builtin else "")
        tf_pipeline.check_can_prepare(builder, data_dir, builtin)
        tf_pipeline.prepare_builder(builder, data_dir, builtin)
    dataset_entry(config)


def steps_per_epoch(config: Any, batch_size: int | None = None) -> int:
    return max(data_spec(config).num_train // (batch_size or config.batch_size), 1)


def total_train_steps(config: Any) -> int:
    """config.num_train_steps, or config.num_epochs passes over the training split."""
    return config.num_train_steps or int(config.num_epochs * steps_per_epoch(config))


def _reads_synthetic(config: Any) -> bool:
    return dataset_entry(config).reader == "synthetic"


def train_batches(config: Any, mesh: Mesh, *, start_step: int, batch_size: int, augment: str,
                  num_views: int) -> Iterator[dict[str, jax.Array]]:
    """Global training batches {"image": [B, V, H, W, C], "label": [B]} from `start_step` on."""
    spec = data_spec(config)
    if _reads_synthetic(config):
        yield from synthetic.train_iterator(
            config.seed, start_step, batch_size=batch_size, image_size=config.image_size,
            num_classes=spec.num_classes, channels=spec.channels, num_views=num_views,
            sharding=parallel.batch_sharded(mesh))
        return
    from genscl_jax.data import tf_pipeline  # The TensorFlow boundary: only here and in eval_batches.

    local = tf_pipeline.create_train_iterator(
        dataset=dataset_entry(config), data_dir=config.data_dir or None, global_batch_size=batch_size,
        image_size=config.image_size, policy=augment, num_views=num_views, seed=config.seed,
        start_step=start_step, device_color_augment=config.device_color_augment and augment == "simclr",
        channels=spec.channels)
    for batch in local:
        yield parallel.global_batch_from_local(batch, mesh)


def eval_examples(config: Any, split: str = "test") -> int:
    """How many examples one pass of eval_batches(config, split=split) holds (its padding not counted)."""
    if _reads_synthetic(config):
        return synthetic.EVAL_EXAMPLES
    spec = data_spec(config)
    return spec.num_train if split == "train" else spec.num_test


def eval_batches(config: Any, mesh: Mesh, *, split: str = "test") -> Iterator[dict[str, jax.Array]]:
    """One pass over an evaluation split, {"image": [B, H, W, C], "label", "mask"}; padding has mask False."""
    spec = data_spec(config)
    if _reads_synthetic(config):
        # Its own seeds per split, so the "train" and "test" examples differ.
        seed = config.seed + (1_000_003 if split == "test" else 2_000_003)
        yield from synthetic.eval_batches(
            seed, num_examples=synthetic.EVAL_EXAMPLES, batch_size=config.eval_batch_size,
            image_size=config.image_size, num_classes=spec.num_classes, channels=spec.channels,
            sharding=parallel.batch_sharded(mesh))
        return
    from genscl_jax.data import tf_pipeline  # The TensorFlow boundary (see train_batches).

    local = tf_pipeline.create_eval_iterator(
        dataset=dataset_entry(config), data_dir=config.data_dir or None, global_batch_size=config.eval_batch_size,
        image_size=config.image_size, split=split, channels=spec.channels)
    for batch in local:
        yield parallel.global_batch_from_local(batch, mesh)
