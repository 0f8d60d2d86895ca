"""Your own images as a dataset (config.dataset="image_folder", config.data_dir=PATH, local or gs://):

    PATH/train/CLASS/*.jpg (.jpeg, .png)      the training images, one folder per class
    PATH/test/CLASS/...   (or PATH/val/...)   the evaluation images, classes a subset of train's

The classes are train's folder names, sorted; label i is the i-th. `scan` lists the files through etils.epath and
checks the layout, so a mistake (no such folder, a class without images, a test class train does not have) is one
DataError naming the path before anything is read. Channels, mean and std are measured from the training images
(genscl_jax.data.tf_stats, which also finds unreadable images) and stored in PATH/genscl_jax_stats.json, or given
in the config. Reading the images is genscl_jax.data.tf_pipeline's.

No TensorFlow here: listing files and reading stored statistics do not need it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Mapping

from etils import epath

from genscl_jax.data import registry
from genscl_jax.data.registry import DataError
from genscl_jax.data.stats import Stats

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
STATS_FILE = "genscl_jax_stats.json"
_LAYOUT = "PATH/train/CLASS/*.jpg (.jpeg, .png) and PATH/test/CLASS/... (or val/)"


@dataclasses.dataclass(frozen=True)
class FolderSplit:
    """The images of one split and their labels (indices into FolderLayout.classes), in a fixed order."""

    files: tuple[str, ...]
    labels: tuple[int, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class FolderLayout:
    root: str
    classes: tuple[str, ...]
    splits: Mapping[str, FolderSplit]
    train_split: str
    test_split: str

    def fingerprint(self) -> str:
        """A digest of every image's split/class/name (relative to the root, so a moved folder keeps it)."""
        digest = hashlib.sha256()
        for split in sorted(self.splits):
            for path in self.splits[split].files:
                digest.update(path[len(self.root):].encode() + b"\n")
        return digest.hexdigest()


def _subfolders(folder: epath.Path) -> list[str]:
    """Names of the folders in `folder`, sorted; hidden ones (.ipynb_checkpoints, ...) left out."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())


def _images(folder: epath.Path) -> list[str]:
    return sorted(os.fspath(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _test_split(root: epath.Path, test_split: str) -> str:
    if test_split:
        return test_split
    for name in registry.TEST_SPLITS:
        if (root / name).is_dir():
            return name
    raise DataError(f"{root}: no test/ or val/ folder beside train/ (the evaluation images); an image folder holds "
                    f"{_LAYOUT.replace('PATH', os.fspath(root))}")


def _split(root: epath.Path, split: str, classes: tuple[str, ...]) -> FolderSplit:
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; an image folder holds {_LAYOUT.replace('PATH', os.fspath(root))}")
    names = _subfolders(folder)
    if not names:
        raise DataError(f"{folder}: no class folders; put each class's images in {folder}/CLASS/ "
                        f"({', '.join(IMAGE_EXTENSIONS)})")
    files, labels = [], []
    for name in names:
        if name not in classes:
            raise DataError(f"{folder / name}: class {name!r} has no training folder; the training classes are "
                            f"{', '.join(classes)}")
        images = _images(folder / name)
        if not images:
            raise DataError(f"{folder / name}: no images ({', '.join(IMAGE_EXTENSIONS)}); add some or remove the "
                            "folder")
        files += images
        labels += [classes.index(name)] * len(images)
    return FolderSplit(tuple(files), tuple(labels))


def scan(root: str, train_split: str = "", test_split: str = "") -> FolderLayout:
    """The classes and images of the image folder at `root`; DataError naming the path when the layout is wrong."""
    path = epath.Path(root)
    if not path.is_dir():
        raise DataError(f"{root}: no such folder (config.data_dir of an image folder holds {_LAYOUT})")
    train_split = train_split or "train"
    if not any(path.iterdir()):
        raise DataError(f"{root}: the folder is empty; an image folder holds {_LAYOUT.replace('PATH', root)}")
    if not (path / train_split).is_dir():
        raise DataError(f"{path / train_split}: no such folder; an image folder holds "
                        f"{_LAYOUT.replace('PATH', os.fspath(path))}")
    classes = tuple(_subfolders(path / train_split))  # Sorted: label i is the i-th name.
    test_split = _test_split(path, test_split)
    splits = {split: _split(path, split, classes) for split in (train_split, test_split)}
    return FolderLayout(os.fspath(path), classes, splits, train_split, test_split)


def stats_path(layout: FolderLayout) -> str:
    return os.fspath(epath.Path(layout.root) / STATS_FILE)


def entry(layout: FolderLayout, stats: Stats) -> registry.Dataset:
    """The registry entry of a scanned folder with its statistics."""
    info = registry.DatasetInfo(
        num_classes=len(layout.classes), num_train=len(layout.splits[layout.train_split].files),
        num_test=len(layout.splits[layout.test_split].files), channels=stats.channels, mean=stats.mean,
        std=stats.std, train_split=layout.train_split, test_split=layout.test_split)
    return registry.Dataset(info, reader="image_folder", variable_size=True, folder=layout)
