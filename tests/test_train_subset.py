"""config.train_subset (a class-balanced labelled subset fixed by its own seed) and the bounded kNN bank, on every
dataset kind: a tiny real Fashion-MNIST through tfds, an image folder, the synthetic task.

The tiny Fashion-MNIST has 60 training images, 6 of each class (label i % 10), and pixel (0, 0) of image i is
100 + i, so with policy "none" a batch tells which images it holds.
"""

import importlib.util
import os

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from conftest import make_tiny_config  # noqa: E402
from helpers import clear_dataset_entries, folder_config, write_folder, write_tiny_fashion_mnist  # noqa: E402

from genscl_jax import data, runner  # noqa: E402
from genscl_jax.config import defaults  # noqa: E402
from genscl_jax.config.validation import ConfigError, validate  # noqa: E402
from genscl_jax.data import fashion_mnist_offline as fmo  # noqa: E402
from genscl_jax.data import registry, subset, tfds_builders, views  # noqa: E402
from genscl_jax.runtime import parallel  # noqa: E402
from genscl_jax.trainers import linear_eval  # noqa: E402

NUM_TRAIN, PER_CLASS = 60, 6
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory):
    """A data_dir holding the tiny Fashion-MNIST, prepared with the offline builder (while the module's tests run)."""
    source = tmp_path_factory.mktemp("fashion_source")
    write_tiny_fashion_mnist(str(source), num_train=NUM_TRAIN, num_test=10)
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    with pytest.MonkeyPatch.context() as patch:  # the offline builder reads this module's files, never the network
        patch.setenv(fmo.SOURCE_DIR_ENV, str(source))
        tfds_builders.load_builder(registry.get("fashion_mnist"), data_dir)
        yield data_dir


def fashion_source(data_dir, **overrides):
    config = defaults.base_config()
    config.dataset, config.data_dir, config.image_size = "fashion_mnist", data_dir, 32
    for key, value in overrides.items():
        config[key] = value
    return data.resolve(config)


def images_read(batches, count=None):
    """The tiny Fashion-MNIST ids (pixel (0, 0) - 100) of the valid examples of `count` batches (None: all)."""
    ids, labels = [], []
    for i, batch in enumerate(batches):
        if count is not None and i == count:
            break
        image = np.asarray(batch["image"])
        image = image[:, 0] if image.ndim == 5 else image  # training batches have a views axis
        keep = np.asarray(batch["mask"]) if "mask" in batch else np.ones(len(image), bool)
        ids += list(image[keep, 2, 2, 0].astype(int) - 100)
        labels += list(np.asarray(batch["label"])[keep])
    return np.asarray(ids), np.asarray(labels)


@pytest.fixture(autouse=True)
def fresh_entries():
    """Every test starts as a new process would: no dataset entry cached from an earlier test."""
    clear_dataset_entries()
    yield
    clear_dataset_entries()


def train_batches(source, start_step=0, batch_size=6, mesh=None):
    """The training batches of `source` with no augmentation (one view per image)."""
    plan = views.resolve("none", source.entry, image_size=source.image_size)
    return source.training_input(mesh or parallel.create_mesh(), plan, batch_size=batch_size,
                                 num_views=1).batches(start_step)


def test_selection_is_class_balanced_and_fixed_by_its_own_seed():
    labels = np.repeat(np.arange(4), [5, 9, 7, 6])
    keys = np.arange(len(labels)) * 7
    chosen = subset.select(keys, labels, 3, seed=0, num_classes=4, strict_what="config.train_subset")
    assert np.bincount(chosen.labels, minlength=4).tolist() == [3, 3, 3, 3]
    np.testing.assert_array_equal(labels[chosen.keys // 7], chosen.labels)
    again = subset.select(keys, labels, 3, seed=0, num_classes=4, strict_what="config.train_subset")
    np.testing.assert_array_equal(again.keys, chosen.keys)
    other = subset.select(keys, labels, 3, seed=1, num_classes=4, strict_what="config.train_subset")
    assert set(other.keys) != set(chosen.keys)
    with pytest.raises(data.DataError, match=r"^config.train_subset=6: class 0 has only 5 training examples; use "
                                             r"at most 5 \(the smallest class\) or 0 \(all\)$"):
        subset.select(keys, labels, 6, seed=0, num_classes=4, strict_what="config.train_subset")
    bank = chosen.balanced(2, seed=0, num_classes=4)  # within the subset; a bank takes what a class has
    assert set(bank.keys) <= set(chosen.keys) and np.bincount(bank.labels).tolist() == [2, 2, 2, 2]
    assert len(subset.select(keys, labels, 6, seed=0, num_classes=4, strict_what="")) == 5 + 6 + 6 + 6


def test_a_tfds_subset_is_what_every_reader_of_the_training_split_sees(fashion_dir):
    source = fashion_source(fashion_dir, train_subset=3)
    assert source.info.num_train == 30 and source.steps_per_epoch(6) == 5 and source.eval_examples("train") == 30
    ids, labels = images_read(train_batches(source), 5)  # one epoch
    assert len(set(ids)) == 30 and np.bincount(labels).tolist() == [3] * 10
    np.testing.assert_array_equal(labels, ids % 10)
    second, _ = images_read(train_batches(source, start_step=5), 5)  # the next epoch: the same images, reshuffled
    assert set(second) == set(ids) and not np.array_equal(second, ids)
    evaluated, _ = images_read(source.eval_batches(parallel.create_mesh(), batch_size=8, split="train"))
    assert sorted(evaluated) == sorted(ids)
    # The same images for another run seed (only their order changes); other ones for another subset seed.
    other_run, _ = images_read(train_batches(fashion_source(fashion_dir, train_subset=3, seed=5)), 5)
    assert set(other_run) == set(ids) and not np.array_equal(other_run, ids)
    other_subset, _ = images_read(train_batches(fashion_source(fashion_dir, train_subset=3, train_subset_seed=1)), 5)
    assert set(other_subset) != set(ids)
    # Without a subset every image is read.
    everything, _ = images_read(train_batches(fashion_source(fashion_dir)), 10)
    assert len(set(everything)) == NUM_TRAIN


def test_a_resumed_subset_run_reads_the_batches_of_an_uninterrupted_one(fashion_dir):
    source = fashion_source(fashion_dir, train_subset=2)  # 20 images, batch 6: epoch boundaries inside steps 3, 6
    reference = images_read(train_batches(source), 8)[0].reshape(8, 6)
    for start_step in (3, 4):
        resumed = images_read(train_batches(fashion_source(fashion_dir, train_subset=2), start_step), 8 - start_step)
        np.testing.assert_array_equal(resumed[0].reshape(-1, 6), reference[start_step:])


def test_a_subset_of_more_than_a_class_has_is_one_line(fashion_dir):
    with pytest.raises(data.DataError, match=r"^config.train_subset=7: class 0 has only 6 training examples"):
        fashion_source(fashion_dir, train_subset=7)


def test_negative_values_are_one_line():
    for key in ("train_subset", "train_subset_seed"):
        config = make_tiny_config(**{key: -1})
        with pytest.raises(ConfigError, match=rf"^config.{key}=-1: must be >= 0$"):
            validate(config, 1)


def test_the_linear_probe_is_trained_on_the_subset_only(fashion_dir):
    source = fashion_source(fashion_dir, train_subset=2)
    config = make_tiny_config(eval_batch_size=8)
    selected, _ = images_read(train_batches(source), 20 // 6 + 1)

    def encode(images):  # the image id as its one "feature"
        return images[:, 2, 2, :].astype(np.float32) - 100

    features, labels = linear_eval._precompute(config, parallel.create_mesh(), source, encode)
    assert len(labels) == 20 and sorted(features[:, 0].astype(int)) == sorted(set(selected))
    np.testing.assert_array_equal(labels, features[:, 0].astype(int) % 10)


def test_a_bounded_knn_bank_is_balanced_within_the_subset_and_spread_over_a_whole_split(fashion_dir):
    mesh = parallel.create_mesh()
    source = fashion_source(fashion_dir, train_subset=4)
    ids, labels = images_read(source.bank_batches(mesh, batch_size=8, max_examples=20))
    subset_ids, _ = images_read(source.eval_batches(mesh, batch_size=8, split="train"))
    assert set(ids) <= set(subset_ids) and np.bincount(labels).tolist() == [2] * 10
    # The same bank in every run (its own seed), and the whole subset when the bound is not below it.
    again, _ = images_read(fashion_source(fashion_dir, train_subset=4, seed=3).bank_batches(
        mesh, batch_size=8, max_examples=20))
    np.testing.assert_array_equal(again, ids)
    assert len(images_read(source.bank_batches(mesh, batch_size=8, max_examples=40))[0]) == 40
    # A whole tfds split: an evenly spread sample (one in three of the reading order here), not its first examples.
    whole = fashion_source(fashion_dir)
    in_order, _ = images_read(whole.eval_batches(mesh, batch_size=8, split="train"))
    ids, _ = images_read(whole.bank_batches(mesh, batch_size=8, max_examples=20))
    np.testing.assert_array_equal(ids, in_order[::3])


def test_image_folders_take_a_subset_and_a_balanced_bank(tmp_path):
    write_folder(tmp_path)  # 3 classes of 4 training images
    mesh = parallel.create_mesh()
    source = data.resolve(folder_config(tmp_path, image_size=16, train_subset=2))
    assert source.info.num_train == 6
    files = source.entry.train_selection.keys
    assert np.bincount(source.entry.train_selection.labels).tolist() == [2, 2, 2]
    batch = next(train_batches(source, batch_size=6, mesh=mesh))
    assert sorted(np.asarray(batch["label"]).tolist()) == [0, 0, 1, 1, 2, 2]
    assert len(files) == 6
    # The bounded bank of a whole folder: one image of each class (not the first class's first three images).
    whole = data.resolve(folder_config(tmp_path, image_size=16))
    bank = list(whole.bank_batches(mesh, batch_size=4, max_examples=3))
    labels = np.concatenate([np.asarray(b["label"])[np.asarray(b["mask"])] for b in bank])
    assert sorted(labels.tolist()) == [0, 1, 2]
    with pytest.raises(data.DataError, match=r"^config.train_subset=5: class 0 has only 4 training examples"):
        data.resolve(folder_config(tmp_path, train_subset=5))


def test_the_quickstart_with_readmes_image_folder_flags_is_valid(tmp_path):
    """README's own-data flags on configs/quickstart.py (whose kNN bank is bounded) pass validation and resolve."""
    spec = importlib.util.spec_from_file_location("quickstart_recipe", os.path.join(ROOT, "configs", "quickstart.py"))
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    config = recipe.get_config()
    write_folder(tmp_path)
    config.dataset, config.data_dir = "image_folder", str(tmp_path)
    assert config.knn.enabled and config.knn.max_train_examples > 0
    validate(config, 1)
    assert data.resolve(config).info.num_train == 12


def test_the_synthetic_task_takes_a_subset_fixed_across_run_seeds():
    mesh = parallel.create_mesh()

    def source(**overrides):
        return data.resolve(make_tiny_config(dataset="synthetic", train_subset=2, **overrides))

    first = source()
    assert first.info.num_train == 2 * first.info.num_classes and first.eval_examples("train") == 20
    bank = list(first.eval_batches(mesh, batch_size=32, split="train"))
    assert np.bincount(np.asarray(bank[0]["label"])[:20]).tolist() == [2] * 10
    again = list(source(seed=7).eval_batches(mesh, batch_size=32, split="train"))
    np.testing.assert_array_equal(np.asarray(bank[0]["image"]), np.asarray(again[0]["image"]))
    # Training batches draw from those 20 examples: an epoch of 20 holds each once.
    batch = next(train_batches(first, batch_size=20, mesh=mesh))
    assert np.bincount(np.asarray(batch["label"])).tolist() == [2] * 10


@pytest.mark.slow
def test_the_data_line_and_summary_say_how_many_images_and_classes(tmp_path, capsys):
    config = make_tiny_config(dataset="synthetic", train_subset=3, num_train_steps=1)
    summary = runner.run(config, str(tmp_path / "run"))
    assert summary["train_images"] == 30 and summary["num_classes"] == 10
    assert "data: synthetic, 30 train (a subset of 3 per class) / 2,048 test images" in capsys.readouterr().err
