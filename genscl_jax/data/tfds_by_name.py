"""Any tfds dataset by name (config.dataset="tfds:NAME", NAME as `tfds build` takes it, NAME/CONFIG included).

Its registry entry is made from the prepared builder: classes from the label feature, split sizes from the data,
channels from the image feature; the image and label features are the dataset's supervised_keys. Mean and std are
measured on at most MAX_STATS_IMAGES training images and stored in <data_dir>/genscl_jax_stats/, or given in the
config. Images of no fixed size, or too many to cache decoded, are read encoded per epoch (Dataset.variable_size).

Imports TensorFlow: genscl_jax.data imports it only for a tfds:NAME dataset.
"""

from __future__ import annotations

import os
import re

import tensorflow_datasets as tfds

from genscl_jax.data import registry, stats, tf_stats, tfds_builders
from genscl_jax.data.registry import DataError

# Enough for mean and std to three decimals; the whole of a large dataset would take as long as an epoch.
MAX_STATS_IMAGES = 50_000
# Decoded training images up to this size are cached in memory (the CIFAR path); larger ones are streamed.
IN_MEMORY_BYTES = 2 << 30


def _feature_keys(builder, name: str) -> tuple[str, str]:
    """(image feature, label feature): the supervised_keys, checked to be an image and a class label."""
    keys = builder.info.supervised_keys
    image_key, label_key = keys if isinstance(keys, tuple) and len(keys) == 2 else ("image", "label")
    features = builder.info.features

    def is_a(key, kind):
        return isinstance(key, str) and key in features.keys() and isinstance(features[key], kind)

    if not (is_a(image_key, tfds.features.Image) and is_a(label_key, tfds.features.ClassLabel)):
        raise DataError(f"tfds:{name} is not an image classification dataset (its features: "
                        f"{', '.join(features.keys())}); genscl_jax reads an Image feature and a ClassLabel one "
                        "(the dataset's supervised_keys)")
    return image_key, label_key


def _splits(builder, name: str, train_split: str, test_split: str) -> tuple[str, str]:
    known = list(builder.info.splits)  # Empty under tfds's test mocks, which take any split.
    if not test_split:
        test_split = next((s for s in registry.TEST_SPLITS if s in known), registry.TEST_SPLITS[0])
    for key, split in (("train_split", train_split), ("test_split", test_split)):
        base = re.split(r"[\[+]", split)[0]  # "train[:10%]" and "train+validation" are tfds split expressions.
        if known and base not in known:
            raise DataError(f"tfds:{name} has no split {base!r} (config.{key}={split!r}); its splits: "
                            f"{', '.join(known)}")
    return train_split, test_split


def stats_path(builder, data_dir: str | None, split: str) -> str:
    safe_split = re.sub(r"[^\w.-]", "_", split)
    return os.path.join(tfds_builders.default_data_dir(data_dir), "genscl_jax_stats", builder.info.full_name,
                        f"{safe_split}.json")


def entry(name: str, data_dir: str | None, *, train_split: str = "", test_split: str = "",
          mean: tuple[float, ...] = (), std: tuple[float, ...] = ()) -> registry.Dataset:
    """The registry entry of tfds dataset `name`, prepared in data_dir (downloaded when it is not yet)."""
    builder = tfds_builders.prepare_builder(tfds_builders.make_builder(name, data_dir), data_dir)
    image_key, label_key = _feature_keys(builder, name)
    train_split, test_split = _splits(builder, name, train_split or "train", test_split)
    num_train = tfds_builders.split_size(builder, train_split)
    height, width, channels = builder.info.features[image_key].shape
    channels = channels or 3
    variable = height is None or width is None or num_train * height * width * channels > IN_MEMORY_BYTES
    if mean:
        if len(mean) != channels and not variable:  # Decoded images are read with the channels they are stored in.
            raise DataError(f"tfds:{name} has {channels}-channel images: config.data_mean and config.data_std need "
                            f"{channels} values, got {len(mean)}")
        measured = stats.Stats(channels=len(mean), mean=mean, std=std)
    else:
        images = builder.as_dataset(split=train_split).map(lambda example: example[image_key])
        measured = stats.load_or_compute(
            stats_path(builder, data_dir, train_split), f"{builder.info.full_name} {train_split} {num_train}",
            lambda: tf_stats.dataset_stats(images, channels, MAX_STATS_IMAGES), what=f"tfds:{name} {train_split}")
    info = registry.DatasetInfo(
        num_classes=builder.info.features[label_key].num_classes, num_train=num_train,
        num_test=tfds_builders.split_size(builder, test_split), channels=measured.channels, mean=measured.mean,
        std=measured.std, train_split=train_split, test_split=test_split)
    return registry.Dataset(info, reader="tfds", tfds_name=name, variable_size=variable, image_key=image_key,
                            label_key=label_key)
