"""Your own images (dataset=image_folder) and any tfds dataset by name (dataset=tfds:NAME): layout, classes,
statistics measured once and stored, bad input as one line naming the path, and a run end to end."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from conftest import make_tiny_config  # noqa: E402
from helpers import (CLASSES, class_image, clear_dataset_entries, folder_config, write_folder,  # noqa: E402,F401
                     write_image)

from genscl_jax import data, runner  # noqa: E402
from genscl_jax.config.validation import ConfigError, validate  # noqa: E402
from genscl_jax.data import image_folder, registry, tf_pipeline, tf_stats, views  # noqa: E402
from genscl_jax.data.registry import DataError  # noqa: E402

@pytest.fixture(autouse=True)
def fresh_entries():
    """Every test starts as a new process would: no dataset entry cached from an earlier test."""
    clear_dataset_entries()
    yield
    clear_dataset_entries()


def test_classes_are_the_sorted_folder_names_and_val_counts_as_test(tmp_path):
    write_folder(tmp_path, test="val")
    layout = image_folder.scan(str(tmp_path))
    assert layout.classes == ("ant", "cat", "zebra")
    assert (layout.train_split, layout.test_split) == ("train", "val")
    train = layout.splits["train"]
    assert len(train.files) == 12 and len(layout.splits["val"].files) == 6
    for path, label in zip(train.files, train.labels):
        assert os.path.basename(os.path.dirname(path)) == layout.classes[label]
    spec = data.resolve(folder_config(tmp_path)).info
    assert (spec.num_classes, spec.num_train, spec.num_test, spec.split_name("test")) == (3, 12, 6, "val")


def test_statistics_are_measured_once_stored_and_read_back(tmp_path, monkeypatch, capsys):
    written = write_folder(tmp_path)
    stats_file = tmp_path / image_folder.STATS_FILE
    spec = data.resolve(folder_config(tmp_path)).info
    # One console line on stderr, not a raw absl INFO line, and nothing on stdout.
    out, err = capsys.readouterr()
    assert out == "" and re.fullmatch(rf"  statistics of the image folder {tmp_path} measured on [\d,]+ images in "
                                      rf"[\d.]+ s: mean \([\d., ]+\), std \([\d., ]+\); stored in \S+\n", err), err
    pixels = np.stack([image for image, _ in written["train"]]).reshape(-1, 3) / 255.0  # PNG: exact pixels.
    assert spec.channels == 3
    np.testing.assert_allclose(spec.mean, pixels.mean(0), atol=1e-9)
    np.testing.assert_allclose(spec.std, pixels.std(0), atol=1e-9)
    assert stats_file.exists()
    written_at = stats_file.stat().st_mtime_ns

    data.source._image_folder_entry.cache_clear()  # A second run, in a new process: it must read, not measure.
    monkeypatch.setattr(tf_stats, "folder_stats", lambda *a: pytest.fail("statistics measured a second time"))
    again = data.resolve(folder_config(tmp_path)).info
    assert (again.mean, again.std, again.channels) == (spec.mean, spec.std, spec.channels)
    assert stats_file.stat().st_mtime_ns == written_at

    # Statistics given in the config win, and need no measurement at all.
    data.source._image_folder_entry.cache_clear()
    given = data.resolve(folder_config(tmp_path, data_mean=(0.5,), data_std=(0.25,))).info
    assert (given.channels, given.mean, given.std) == (1, (0.5,), (0.25,))


def test_a_changed_folder_is_measured_again_and_gray_folders_have_one_channel(tmp_path):
    write_folder(tmp_path, channels=1)
    first = data.resolve(folder_config(tmp_path)).info
    assert first.channels == 1 and len(first.mean) == 1
    write_image(tmp_path / "train" / "ant" / "extra.png", np.full((16, 16, 1), 255, np.uint8))
    data.source._image_folder_entry.cache_clear()
    second = data.resolve(folder_config(tmp_path)).info
    assert second.num_train == first.num_train + 1 and second.mean[0] > first.mean[0]


def break_folder(root, case):
    """A folder with one mistake; returns the path the error must name."""
    if case == "empty folder":
        os.makedirs(root / "images")
        return root / "images"
    write_folder(root)
    if case == "class without images":
        os.makedirs(root / "train" / "bee")
        (root / "train" / "bee" / "notes.txt").write_text("not an image")
        return root / "train" / "bee"
    if case == "test class unknown to train":
        write_image(root / "test" / "yak" / "0.png", class_image(0, 0))
        return root / "test" / "yak"
    if case == "unreadable image":
        (root / "test" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
        return root / "test" / "cat" / "broken.jpg"
    if case == "no test folder":
        import shutil
        shutil.rmtree(root / "test")
        return root
    raise ValueError(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["empty folder", "class without images", "test class unknown to train",
                                  "unreadable image", "no test folder"])
def test_bad_input_is_one_line_naming_the_path_before_training(tmp_path, case):
    named = break_folder(tmp_path, case)
    root = tmp_path / "images" if case == "empty folder" else tmp_path
    config = make_tiny_config(dataset="image_folder", data_dir=str(root))
    with pytest.raises(runner.RunError) as error:
        runner.run(config, str(tmp_path / "run"))
    message = str(error.value)
    assert "\n" not in message and str(named) in message, message
    assert not (tmp_path / "run" / "checkpoints").exists()  # Nothing was trained.


def test_config_accepts_image_folder_and_any_tfds_name():
    for dataset, data_dir in (("image_folder", "/images"), ("tfds:mnist", ""), ("tfds:imagenette/320px", "")):
        validate(folder_config(data_dir, dataset=dataset), num_devices=1)
    bad = [({"dataset": "tfds:"}, "allowed: cifar10, .*image_folder, tfds:NAME"),
           ({"dataset": "image_folder", "data_dir": ""}, "config.data_dir is empty"),
           ({"dataset": "cifar10", "train_split": "train[:10%]"}, "use dataset=tfds:cifar10"),
           ({"data_mean": (0.5, 0.5, 0.5), "data_std": (0.2,)}, "give both"),
           ({"data_mean": (0.5,), "data_std": (0.0,)}, "must be a number > 0"),
           ({"dataset": "cifar10", "data_mean": (0.5,), "data_std": (0.2,)}, "cifar10 has 3 channel")]
    for overrides, message in bad:
        config = folder_config("/images", **overrides)
        with pytest.raises(ConfigError, match=message):
            validate(config, num_devices=1)


def test_folder_batches_cover_each_split_with_their_labels(tmp_path):
    written = write_folder(tmp_path)
    entry = data.resolve(folder_config(tmp_path)).entry
    train = tf_pipeline.create_train_iterator(
        dataset=entry, data_dir=None, global_batch_size=4, plan=views.resolve("simclr", entry, image_size=8),
        num_views=2, seed=0, process_index=0, process_count=1)
    batches = [next(train) for _ in range(3)]  # One epoch of 12.
    assert batches[0]["image"].shape == (4, 2, 8, 8, 3)
    assert sorted(np.concatenate([b["label"] for b in batches])) == [0] * 4 + [1] * 4 + [2] * 4
    evaluation = list(tf_pipeline.create_eval_iterator(dataset=entry, data_dir=None, global_batch_size=4,
                                                      image_size=16, process_index=0, process_count=1))
    assert [int(b["mask"].sum()) for b in evaluation] == [4, 2]
    labels = np.concatenate([b["label"][b["mask"]] for b in evaluation])
    assert list(labels) == [0, 0, 1, 1, 2, 2]  # Sorted classes, each class's files in name order.
    # Evaluation images are the files themselves at their own size (central square of a square image).
    images = np.concatenate([b["image"][b["mask"]] for b in evaluation])
    assert images.dtype == np.uint8  # The step normalises, with the folder's statistics.
    normalised = (images / 255.0 - entry.info.mean) / entry.info.std
    expected = (np.stack([image for image, _ in written["test"]]) / 255.0 - entry.info.mean) / entry.info.std
    np.testing.assert_allclose(normalised, expected, atol=0.15 / min(entry.info.std))  # JPEG: close, not exact.


def test_processes_read_disjoint_shares_of_a_folder(tmp_path):
    written = write_folder(tmp_path)
    entry = data.resolve(folder_config(tmp_path)).entry

    def signature(images):  # Each training image's own pixel sum (PNG, read at its own size: exact).
        return {int(v) for v in images.astype(int).reshape(len(images), -1).sum(1)}

    shares, eval_counts = [], []
    for process in range(2):  # Global batch 4, local 2: 3 local steps are one epoch of the 6-file share.
        train = tf_pipeline.create_train_iterator(
            dataset=entry, data_dir=None, global_batch_size=4, plan=views.resolve("none", entry, image_size=16),
            num_views=1, seed=0, process_index=process, process_count=2)
        shares.append(signature(np.concatenate([next(train)["image"][:, 0] for _ in range(3)])))
        evaluation = list(tf_pipeline.create_eval_iterator(
            dataset=entry, data_dir=None, global_batch_size=4, image_size=16, process_index=process, process_count=2))
        eval_counts.append((len(evaluation), sum(int(b["mask"].sum()) for b in evaluation)))
    assert len(shares[0]) == len(shares[1]) == 6 and not shares[0] & shares[1]
    assert shares[0] | shares[1] == {int(image.astype(int).sum()) for image, _ in written["train"]}
    assert eval_counts == [(2, 3), (2, 3)]  # Every test image once; the same number of batches everywhere.


@pytest.mark.slow
def test_stored_statistics_are_read_without_tensorflow(tmp_path):
    write_folder(tmp_path)
    data.resolve(folder_config(tmp_path))  # Measures (TensorFlow) and stores.
    code = ("import sys\nfrom genscl_jax import data\nfrom genscl_jax.config import defaults\n"
            "c = defaults.base_config()\n"
            f"c.dataset, c.data_dir = 'image_folder', {str(tmp_path)!r}\n"
            "source = data.resolve(c)\nprint(source.info.num_classes, source.steps_per_epoch(4))\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["3", "3"]


@pytest.mark.slow
def test_an_image_folder_pretrains_with_knn_and_evaluates_linearly_end_to_end(tmp_path):
    write_folder(tmp_path / "images")
    config = make_tiny_config(dataset="image_folder", data_dir=str(tmp_path / "images"), mode="pretrain_and_eval",
                              batch_size=4, num_train_steps=3, eval_batch_size=4, augment="simclr",
                              eval_every_steps=3, **{"knn.enabled": True, "knn.k": 3, "linear_eval.batch_size": 4})
    summary = runner.run(config, str(tmp_path / "run"))
    assert summary["steps"] == 3 and np.isfinite(summary["final_loss"])
    assert 0.0 <= summary["linear_eval_top1"] <= 1.0 and 0.0 <= summary["knn_top1"] <= 1.0
    assert (tmp_path / "images" / image_folder.STATS_FILE).exists()


@pytest.mark.slow
def test_an_image_folder_trains_supervised(tmp_path):
    write_folder(tmp_path / "images", test="val")
    config = make_tiny_config(dataset="image_folder", data_dir=str(tmp_path / "images"), mode="supervised",
                              batch_size=4, num_train_steps=2, eval_batch_size=4, augment="crop_flip")
    summary = runner.run(config, str(tmp_path / "run"))
    assert summary["steps"] == 2 and 0.0 <= summary["test_top1"] <= 1.0


@pytest.mark.parametrize("name, num_classes, channels", [("mnist", 10, 1), ("cifar100", 100, 3)])
def test_tfds_by_name_takes_classes_from_the_builder(tmp_path, name, num_classes, channels, monkeypatch):
    config = folder_config(tmp_path, dataset=f"tfds:{name}")
    made = []
    monkeypatch.setattr(tfds, "builder", lambda *args, make=tfds.builder, **kwargs: made.append(args) or make(
        *args, **kwargs))
    with tfds.testing.mock_data(num_examples=6):
        entry = data.resolve(config).entry
        spec = data.resolve(config).info
        batch = next(tf_pipeline.create_train_iterator(
            dataset=entry, data_dir=str(tmp_path), global_batch_size=4,
            plan=views.resolve("simclr", entry, image_size=32), num_views=2, seed=0, process_index=0, process_count=1))
    assert (spec.num_classes, spec.channels, spec.num_train) == (num_classes, channels, 6)
    assert entry.tfds_name == name and not entry.variable_size
    assert batch["image"].shape == (4, 2, 32, 32, channels)
    stored = tmp_path / "genscl_jax_stats"
    assert len(list(stored.rglob("train.json"))) == 1  # Measured once, stored in the data_dir.
    assert made == [(name,)]  # One tfds builder serves the facts, the statistics and the batches.


def test_an_unknown_tfds_name_is_one_line_with_the_closest_names(tmp_path):
    with pytest.raises(DataError) as error:
        data.resolve(folder_config(tmp_path, dataset="tfds:cifar11"))
    assert "\n" not in str(error.value) and "did you mean cifar10" in str(error.value)


def test_registry_lists_the_new_choices():
    assert registry.CHOICES[-1] == "image_folder" and registry.is_tfds_name("tfds:mnist")
    assert not registry.is_tfds_name("tfds:") and not registry.is_tfds_name("mnist")
