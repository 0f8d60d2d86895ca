"""The datasets genscl_jax reads: names and facts, no TensorFlow (augmentation is genscl_jax.data.views').

One entry per dataset: its DatasetInfo (what a trainer needs to know: classes, split sizes, channels,
normalisation statistics, split names) and how it is read. A new dataset is one entry in DATASETS. Reading:

- reader "synthetic": generated on the accelerator by genscl_jax.data.synthetic (no TensorFlow);
- reader "tfds": a tfds builder (`tfds_name`, or the `builder` hook) through genscl_jax.data.tf_pipeline.

Two more kinds of dataset take their facts from the data itself (genscl_jax.data makes their entries):
"image_folder" (PATH/train/CLASS/*.jpg, reader "image_folder", genscl_jax.data.image_folder) and "tfds:NAME", any
tfds dataset by name (reader "tfds", genscl_jax.data.tfds_by_name).

Config validation and the trainers import this module, so it imports nothing beyond the standard library.
"""

from __future__ import annotations

import dataclasses
from typing import Any

READERS = ("synthetic", "tfds", "image_folder")
IMAGE_FOLDER = "image_folder"
TFDS_PREFIX = "tfds:"
# The evaluation split (a tfds split, or an image folder's folder) when config.test_split names none: the first
# of these the dataset has.
TEST_SPLITS = ("test", "validation", "val")


class DataError(RuntimeError):
    """Data that cannot be read as configured (missing, damaged, not downloadable from here); the message is one
    line naming the path and how to fix it. runner.run turns it into the CLI's one-line `error: ...`."""


class DataFilesMissing(DataError, FileNotFoundError):
    """A DataError about files that are not where they should be."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A dataset as the trainers see it. `mean` / `std` are per channel, on the 0-1 scale."""

    num_classes: int
    num_train: int
    num_test: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_split: str = "train"
    test_split: str = "test"
    any_channels: bool = False  # generated with any channel count (the synthetic task)

    def with_channels(self, channels: int | None) -> DatasetInfo:
        """This dataset read with `channels` channels (None or 0: its own count): the one channel rule.

        A one-channel dataset is tiled to any count (Fashion-MNIST for an RGB model), its statistics repeated;
        the synthetic generator makes any count. Other datasets keep their own count: their per-channel
        statistics say which channel is which, and no reader drops channels.
        """
        if not channels or channels == self.channels:
            return self
        if self.channels != 1 and not self.any_channels:
            raise ValueError(f"channels={channels} is not supported for a {self.channels}-channel dataset; set "
                             f"channels to 0 (its own {self.channels})")
        return dataclasses.replace(self, channels=channels, mean=self.mean[:1] * channels,
                                   std=self.std[:1] * channels)

    def split_name(self, split: str) -> str:
        """'train' / 'test' name the dataset's own training / evaluation split (ImageNet tests on 'validation')."""
        return {"train": self.train_split, "test": self.test_split}.get(split, split)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A registry entry: the dataset's DatasetInfo and how to read it."""

    info: DatasetInfo
    reader: str  # One of READERS.
    tfds_name: str = ""
    # "module:function": function(tfds_name, data_dir) -> the tfds builder to use instead of
    # tfds.builder(tfds_name, data_dir=data_dir); imported only by the tf.data pipeline.
    builder: str = ""
    # Stored as JPEG and too large to cache decoded in memory: read per epoch with shuffled files, decoded in
    # the parallel map, evaluated with resize + centre crop.
    stored_as_jpeg: bool = False
    # Files tfds cannot download, to be put in <data_dir>/downloads/manual by hand.
    manual_files: tuple[str, ...] = ()
    # A way to get the data without a download, named first when it is not prepared and cannot be downloaded.
    install_hint: str = ""
    # Images of any size, stored encoded as JPEG or PNG (an image folder; a tfds dataset whose images have no
    # fixed size or are too large to cache decoded): read per epoch, decoded in the parallel map, evaluated on
    # their central square.
    variable_size: bool = False
    # The features of a tfds example that hold the image and its class (a tfds dataset's supervised_keys).
    image_key: str = "image"
    label_key: str = "label"
    # Reader "image_folder": its genscl_jax.data.image_folder.FolderLayout (files and labels of every split).
    folder: Any = None
    # The training examples read (config.train_subset; a bounded kNN bank), a genscl_jax.data.subset.Selection of
    # example keys (tfds) or positions (an image folder's files, the synthetic task's examples); None: all of them.
    train_selection: Any = None


# CIFAR statistics are the ones of SupCon's and the GenSCL authors' code (their std is the commonly copied
# per-image one, not the per-pixel (0.247, 0.243, 0.261)); using theirs keeps inputs identical to theirs.
DATASETS: dict[str, Dataset] = {
    "cifar10": Dataset(
        DatasetInfo(10, 50_000, 10_000, 3, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
        reader="tfds", tfds_name="cifar10"),
    "cifar100": Dataset(
        DatasetInfo(100, 50_000, 10_000, 3, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
        reader="tfds", tfds_name="cifar100"),
    "imagenet2012": Dataset(
        DatasetInfo(1000, 1_281_167, 50_000, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                    test_split="validation"),
        reader="tfds", tfds_name="imagenet2012", stored_as_jpeg=True,
        manual_files=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")),
    # tfds's own fashion_mnist when prepared, else built offline from the Debian package's idx files.
    "fashion_mnist": Dataset(
        DatasetInfo(10, 60_000, 10_000, 1, (0.2860,), (0.3530,)),
        reader="tfds", tfds_name="fashion_mnist",
        builder="genscl_jax.data.fashion_mnist_offline:prepared_or_offline_builder",
        install_hint="run `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; the offline files, no download)"),
    # The generator's standardised values x are stored as 8-bit pixels 255 * (0.5 + x / 8) (x in [-4, 4]), like
    # every dataset's, so normalising with these statistics gives x back. The split sizes only set what an "epoch"
    # is (schedules are in epochs); evaluation reads synthetic.EVAL_EXAMPLES.
    "synthetic": Dataset(DatasetInfo(10, 50_000, 10_000, 3, (0.5,) * 3, (0.125,) * 3, any_channels=True),
                         reader="synthetic"),
}
NAMES = tuple(DATASETS)  # The built-in entries.
# What config.dataset takes: a built-in entry, image_folder, or tfds:NAME (see is_tfds_name).
CHOICES = NAMES + (IMAGE_FOLDER,)


def is_tfds_name(name: str) -> bool:
    """True for "tfds:NAME": any tfds dataset, by its `tfds build` name (with a config: NAME/CONFIG)."""
    return name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX)


def is_discovered(name: str) -> bool:
    """A dataset whose classes, sizes and statistics come from the data, not from an entry here."""
    return name == IMAGE_FOLDER or is_tfds_name(name)


def get(name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    return DATASETS[name]
