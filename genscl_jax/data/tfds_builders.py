"""tfds builders: which builder serves a dataset, and preparing it, with errors that say what to do.

A run prepares its dataset once, up front (genscl_jax.data.readable_source): a dataset that is not prepared and cannot
be prepared from here (manual files missing, download server unreachable) is a one-line DataError in seconds
rather than after minutes of tfds retries. The tf.data pipeline (tf_pipeline) and tfds:NAME entries
(tfds_by_name) load their builders through here.

Imports tfds (and TensorFlow): genscl_jax.data imports it only for a dataset read through tfds.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import io
import os
import sys

import tensorflow as tf
import tensorflow_datasets as tfds

from genscl_jax.data import network_probe, registry
from genscl_jax.data.registry import DataError, DataFilesMissing
from genscl_jax.runtime import console


def make_builder(tfds_name: str, data_dir: str | None, hook: str = ""):
    """The tfds builder of `tfds_name`, prepared or not: `hook`'s ("module:function", a registry entry's builder),
    else tfds.builder's. A name tfds does not know is a DataError.

    Made once per process and name: checking that a dataset can be prepared, preparing it, reading a tfds:NAME
    dataset's facts and reading its examples all use the one builder (tfds reads its metadata files for each)."""
    console.drop_benign_warnings()  # tfds's "Variant folder ... has no dataset_info.json", once per folder listed
    return _make_builder_once(tfds_name, data_dir, hook)  # one cache key however the arguments were passed


@functools.lru_cache(maxsize=None)
def _make_builder_once(tfds_name: str, data_dir: str | None, hook: str):
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


def entry_builder(entry: registry.Dataset, data_dir: str | None):
    """The tfds builder that serves a registry entry (its `builder` hook, else tfds's builder of its name)."""
    return make_builder(entry.tfds_name, data_dir, entry.builder)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def default_data_dir(data_dir: str | None) -> str:
    return data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def manual_download_message(entry: registry.Dataset, data_dir: str | None) -> str:
    root = default_data_dir(data_dir)
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

    A run calls this once, up front (genscl_jax.data.readable_source); the readers do not, so tfds's test mocks, which
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


def download_needed(builder, data_dir: str | None, entry: registry.Dataset | None = None) -> str | None:
    """Why `builder` can be read here only after a download (one phrase), or None: it is prepared, or prepares from
    local files (the offline Fashion-MNIST builder, a registry entry's manual files in place). Asks no server."""
    if builder.is_prepared() or getattr(builder, "PREPARES_OFFLINE", False):
        return None
    if entry is not None and entry.manual_files and _manual_files_present(entry, data_dir):
        return None
    return f"not prepared in {default_data_dir(data_dir)}, and preparing it needs a download"


def load_builder(entry: registry.Dataset, data_dir: str | None):
    """The prepared tfds builder of a registry entry (prepares it when needed; never downloads Fashion-MNIST)."""
    return prepare_builder(entry_builder(entry, data_dir), data_dir, entry)


def prepare_builder(builder, data_dir: str | None, entry: registry.Dataset | None = None):
    """`builder`, prepared (downloaded and converted by tfds when it is not yet); failures are one-line DataErrors."""
    if builder.is_prepared():
        return builder
    if not (console.live() or console.verbose()):
        tfds.disable_progress_bar()  # tfds's bars are live on a terminal; in a log they are a page of \r-updates
    console.say(f"  preparing {builder.name} once in {builder.data_dir} (later runs read it)")
    try:
        # tfds print()s "Downloading and preparing dataset ..." to stdout, which holds only the result line: to
        # stderr with --verbose, else dropped (the line above says it).
        with contextlib.redirect_stdout(sys.stderr if console.verbose() else io.StringIO()):
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
