"""The offline Fashion-MNIST tfds builder, on a tiny idx file set written by the test itself."""

import os

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from genscl_jax.data import fashion_mnist_offline as fmo  # noqa: E402
from helpers import FASHION_MNIST_TEST, FASHION_MNIST_TRAIN, write_tiny_fashion_mnist  # noqa: E402

NUM_TRAIN, NUM_TEST = FASHION_MNIST_TRAIN, FASHION_MNIST_TEST


def test_idx_round_trip_and_bad_magic(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    fmo.write_idx(str(tmp_path / "a-idx3-ubyte.gz"), array)
    np.testing.assert_array_equal(fmo.read_idx(str(tmp_path / "a-idx3-ubyte.gz")), array)
    # Header: two zero bytes, type 0x08, ndim, then big-endian dims.
    raw = np.zeros(8, np.uint8).tobytes()
    (tmp_path / "bad").write_bytes(bytes([0, 0, 0x0D, 1]) + raw)
    with pytest.raises(ValueError, match="not an unsigned-byte idx file"):
        fmo.read_idx(str(tmp_path / "bad"))
    (tmp_path / "short").write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ValueError, match="header says"):
        fmo.read_idx(str(tmp_path / "short"))


def test_builder_prepares_and_round_trips(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    arrays = write_tiny_fashion_mnist(str(source))
    builder = fmo.FashionMnistOffline(data_dir=str(tmp_path / "data"), source_dir=str(source))
    builder.download_and_prepare()
    assert builder.info.splits["train"].num_examples == NUM_TRAIN
    assert builder.info.splits["test"].num_examples == NUM_TEST
    assert builder.info.features["image"].shape == (28, 28, 1)
    assert builder.info.features["label"].num_classes == 10
    for split, (images, labels) in arrays.items():
        seen = {}
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            assert example["image"].dtype == np.uint8 and example["image"].shape == (28, 28, 1)
            seen[int(example["image"][0, 0, 0])] = (example["image"][..., 0], example["label"])
        # Every example comes back once, pixels and label intact (tfds may reorder them).
        assert len(seen) == len(images)
        for image, label in zip(images, labels):
            stored_image, stored_label = seen[int(image[0, 0])]
            np.testing.assert_array_equal(stored_image, image)
            assert stored_label == label


def test_missing_files_say_what_to_do(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(fmo.SOURCE_DIR_ENV, str(empty))
    assert fmo.resolve_source_dir() == str(empty)
    builder = fmo.FashionMnistOffline(data_dir=str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError) as error:
        builder.download_and_prepare()
    message = str(error.value)
    assert "\n" not in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert fmo.SOURCE_DIR_ENV in message and str(empty) in message
    assert "train-images-idx3-ubyte.gz" in message


def test_source_dir_precedence(monkeypatch):
    monkeypatch.delenv(fmo.SOURCE_DIR_ENV, raising=False)
    assert fmo.resolve_source_dir() == fmo.DEFAULT_SOURCE_DIR
    monkeypatch.setenv(fmo.SOURCE_DIR_ENV, "/from/env")
    assert fmo.resolve_source_dir() == "/from/env"
    assert fmo.resolve_source_dir("/from/arg") == "/from/arg"


@pytest.mark.skipif(not os.path.isfile(os.path.join(fmo.DEFAULT_SOURCE_DIR, "t10k-labels-idx1-ubyte.gz")),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_debian_files_parse():
    images, labels = fmo.load_split(fmo.DEFAULT_SOURCE_DIR, "test")
    assert images.shape == (10_000, 28, 28, 1) and images.dtype == np.uint8
    assert labels.shape == (10_000,)
    np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)  # Fashion-MNIST's test set is balanced.


def test_without_the_debian_package_tfds_downloads_it_saying_so(tmp_path, monkeypatch, caplog):
    """Colab or macOS: no $GENSCL_FASHION_MNIST_DIR and no /usr/share/datasets/fashion-mnist -> tfds's own builder
    (it downloads where a network exists); with the package (or a named directory) the offline builder stays."""
    monkeypatch.delenv(fmo.SOURCE_DIR_ENV, raising=False)
    monkeypatch.setattr(fmo, "DEFAULT_SOURCE_DIR", str(tmp_path / "no-debian-package"))
    with caplog.at_level("WARNING"):
        builder = fmo.prepared_or_offline_builder("fashion_mnist", str(tmp_path / "tfds"))
    assert not isinstance(builder, fmo.FashionMnistOffline) and builder.name == "fashion_mnist"
    assert "downloads it once" in caplog.text and "apt-get install dataset-fashion-mnist" in caplog.text

    (tmp_path / "no-debian-package").mkdir()  # the package's directory exists: offline, as before
    assert isinstance(fmo.prepared_or_offline_builder("fashion_mnist", str(tmp_path / "tfds")),
                      fmo.FashionMnistOffline)
    monkeypatch.setenv(fmo.SOURCE_DIR_ENV, str(tmp_path / "named-but-missing"))
    (tmp_path / "no-debian-package").rmdir()  # a named directory is never replaced by a download
    assert isinstance(fmo.prepared_or_offline_builder("fashion_mnist", str(tmp_path / "tfds")),
                      fmo.FashionMnistOffline)


def test_preparing_says_one_console_line_and_keeps_stdout_clean(tmp_path, capsys):
    # tfds print()s "Downloading and preparing dataset ..." to stdout, which holds only the run's result line.
    from genscl_jax.data import tfds_builders

    source = tmp_path / "source"
    source.mkdir()
    write_tiny_fashion_mnist(str(source))
    builder = fmo.FashionMnistOffline(data_dir=str(tmp_path / "data"), source_dir=str(source))
    tfds_builders.prepare_builder(builder, str(tmp_path / "data"))
    out, err = capsys.readouterr()
    assert out == "" and "Downloading and preparing" not in err
    assert err == f"  preparing fashion_mnist_offline once in {builder.data_dir} (later runs read it)\n"
