"""Fashion-MNIST as a TFDS dataset built from local idx files, without any network access.

tfds's own `fashion_mnist` builder downloads from the internet, which training machines often cannot
reach. This builder reads the four original idx `.gz` files from a local directory instead (the Debian
package `dataset-fashion-mnist` installs them in /usr/share/datasets/fashion-mnist) and produces the
same features: image (28, 28, 1) uint8 and label ClassLabel(10), splits train (60000) and test (10000).

Source directory, first match wins: the `source_dir` constructor argument, the environment variable
GENSCL_FASHION_MNIST_DIR, /usr/share/datasets/fashion-mnist. Where none is set and the Debian package is absent
(Colab, macOS), `prepared_or_offline_builder` falls back to tfds's own builder, which downloads the data once.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np
import tensorflow_datasets as tfds

from absl import logging

from genscl_jax.data.registry import DataError, DataFilesMissing

DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
SOURCE_DIR_ENV = "GENSCL_FASHION_MNIST_DIR"

# idx file names of the original release, per split: (images, labels).
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# idx magic number: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
_UBYTE_TYPE_CODE = 0x08


def resolve_source_dir(source_dir: str | os.PathLike | None = None) -> str:
    """The directory the idx files are read from (argument, then env var, then the Debian path)."""
    return os.fspath(source_dir or os.environ.get(SOURCE_DIR_ENV) or DEFAULT_SOURCE_DIR)


class DamagedFileError(DataError, ValueError):
    """An idx file that cannot be parsed (truncated, not gzip, wrong header); the message names it and the fix."""


def damaged_file_message(path: str, problem: str) -> str:
    return (f"{path} is damaged ({problem}); restore it: `apt-get install --reinstall dataset-fashion-mnist` "
            f"(the files in {DEFAULT_SOURCE_DIR}), or copy an intact one there (or to ${SOURCE_DIR_ENV}).")


def missing_files_message(source_dir: str, missing: list[str]) -> str:
    """One line that says what is missing and the two ways to fix it."""
    return (f"Fashion-MNIST idx files not found in {source_dir} (missing: {', '.join(missing)}); "
            f"run `apt-get install dataset-fashion-mnist` (installs them in {DEFAULT_SOURCE_DIR}) or put the "
            f"four files in a directory named by ${SOURCE_DIR_ENV}.")


def check_source_files(source_dir: str) -> None:
    """Raises DataFilesMissing (a FileNotFoundError) with `missing_files_message` unless all four files are present."""
    names = [name for pair in SPLIT_FILES.values() for name in pair]
    missing = [n for n in names if not os.path.isfile(os.path.join(source_dir, n))]
    if missing:
        raise DataFilesMissing(missing_files_message(source_dir, missing))


def read_idx(path: str) -> np.ndarray:
    """Parses an idx(.gz) file: magic (0, 0, type, ndim), ndim big-endian uint32 dims, then the data.

    A file that cannot be parsed is a DamagedFileError naming it and how to restore it.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:  # Truncated or not gzip at all.
        raise DamagedFileError(damaged_file_message(path, f"{type(error).__name__}: {error}")) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE_TYPE_CODE:
        raise DamagedFileError(damaged_file_message(
            path, f"not an unsigned-byte idx file: magic bytes {raw[:4]!r}"))
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_size)
    if data.size != int(np.prod(dims)):
        raise DamagedFileError(damaged_file_message(
            path, f"header says {dims} = {int(np.prod(dims))} values, file holds {data.size}"))
    return data.reshape(dims)


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array in idx format (gzip-compressed when `path` ends in .gz); inverse of read_idx.

    Handy for making small Fashion-MNIST-shaped datasets (tests, subsets) that this builder reads.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"idx files written here hold uint8 data, got {array.dtype}")
    header = bytes([0, 0, _UBYTE_TYPE_CODE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def load_split(source_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 28, 28, 1] and labels int64 [N] of one split, checked for consistency."""
    image_file, label_file = SPLIT_FILES[split]
    images = read_idx(os.path.join(source_dir, image_file))
    labels = read_idx(os.path.join(source_dir, label_file))
    image_path = os.path.join(source_dir, image_file)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DamagedFileError(damaged_file_message(
            image_path, f"{split} images {images.shape} and labels {labels.shape} in {label_file} do not match"))
    if images.shape[1:] != (28, 28):
        raise DamagedFileError(damaged_file_message(image_path, f"images are {images.shape[1:]}, expected (28, 28)"))
    if labels.max(initial=0) >= len(CLASS_NAMES):
        raise DamagedFileError(damaged_file_message(
            os.path.join(source_dir, label_file), f"labels go up to {labels.max()}, expected < {len(CLASS_NAMES)}"))
    return images[..., None], labels.astype(np.int64)


def prepared_or_offline_builder(tfds_name: str, data_dir: str | None):
    """tfds's own builder when it is prepared in data_dir; else FashionMnistOffline from the local idx files; else,
    when no source directory was named and the Debian package's is absent, tfds's builder to download (logged).

    The registry's builder hook for "fashion_mnist" (see genscl_jax.data.registry). A directory named by
    $GENSCL_FASHION_MNIST_DIR is never replaced by a download: its missing files are the user's error to see.
    """
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if os.environ.get(SOURCE_DIR_ENV) or os.path.isdir(DEFAULT_SOURCE_DIR):
        return FashionMnistOffline(data_dir=data_dir)
    logging.warning("Fashion-MNIST: no offline idx files (%s is absent; `apt-get install dataset-fashion-mnist` "
                    "provides them), so tfds's %s builder downloads it once into %s.", DEFAULT_SOURCE_DIR,
                    tfds_name, data_dir or "the tfds data directory")
    return builder


class FashionMnistOffline(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST from local idx files (no download)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Built from the original idx files in a local directory."}
    PREPARES_OFFLINE = True  # tfds_builders.download_needed: preparing it reads local files only

    def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs):
        self._source_dir = resolve_source_dir(source_dir)
        super().__init__(**kwargs)
        # Keeps pickling (which re-runs __init__ with _original_state) pointed at the same files.
        self._original_state["source_dir"] = self._source_dir

    @property
    def source_dir(self) -> str:
        return self._source_dir

    def download_and_prepare(self, *args, **kwargs):
        # Fail before tfds announces a "download", with our own one-line errors: a missing file is the likeliest
        # problem, a damaged one (truncated copy, full disk) the next; reading both splits costs about a second.
        if not self.is_prepared():
            check_source_files(self._source_dir)
            for split in SPLIT_FILES:
                load_split(self._source_dir, split)
        return super().download_and_prepare(*args, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Fashion-MNIST (Zalando article images, 10 classes), read from local idx files.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing is downloaded: the files are already local.
        check_source_files(self._source_dir)
        return {split: self._generate_examples(split) for split in SPLIT_FILES}

    def _generate_examples(self, split: str):
        images, labels = load_split(self._source_dir, split)
        # The index in the original file is a stable, unique key.
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": image, "label": int(label)}
