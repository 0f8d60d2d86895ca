"""The tf.data input pipeline: tfds mocks for CIFAR-10 / ImageNet, a tiny real Fashion-MNIST for the rest.

The tiny Fashion-MNIST (20 train, 10 test) is prepared with the offline builder; pixel (0, 0) of every
image is unique (train 100 + i, test 200 + i), so with policy "none" a batch tells which examples it holds.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from helpers import write_tiny_fashion_mnist  # noqa: E402

from genscl_jax.data import registry, tfds_builders, views  # noqa: E402
from genscl_jax.data import tf_pipeline as ip  # noqa: E402
from genscl_jax.data import fashion_mnist_offline as fmo  # noqa: E402

NUM_TRAIN, NUM_TEST = 20, 10
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fashion_source(tmp_path_factory):
    """A directory of tiny Fashion-MNIST idx files."""
    source = tmp_path_factory.mktemp("fashion_source")
    write_tiny_fashion_mnist(str(source), num_train=NUM_TRAIN, num_test=NUM_TEST)
    return source


@pytest.fixture(scope="module")
def fashion_dir(fashion_source, tmp_path_factory):
    """A data_dir holding the tiny Fashion-MNIST, prepared."""
    source = fashion_source
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(fmo.SOURCE_DIR_ENV, str(source))
        tfds_builders.load_builder(registry.get("fashion_mnist"), data_dir)  # Prepares it; later calls only read.
    return data_dir


def signatures(images):
    """Pixel (0, 0) of the original 28 px images: (2, 2) after padding to 32 (uint8, as they leave the host)."""
    return images[..., 2, 2, 0].astype(int)


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def train_iterator(*, dataset, image_size, policy, device_color_augment=False, **kwargs):
    """tf_pipeline.create_train_iterator with `policy`'s view plan for `dataset`."""
    plan = views.resolve(policy, dataset, image_size=image_size, device_color_augment=device_color_augment)
    return ip.create_train_iterator(dataset=dataset, plan=plan, **kwargs)


def fashion_train(data_dir, **kwargs):
    args = dict(dataset=registry.get("fashion_mnist"), data_dir=data_dir, global_batch_size=4, image_size=32,
                policy="none", num_views=1, seed=0, process_index=0, process_count=1)
    return train_iterator(**{**args, **kwargs})


def test_dataset_table_and_errors(fashion_dir):
    tfds_read = {name for name, entry in registry.DATASETS.items() if entry.reader == "tfds"}
    assert tfds_read == {"cifar10", "cifar100", "imagenet2012", "fashion_mnist"}
    info = registry.get("imagenet2012").info
    assert (info.num_classes, info.test_split, len(info.mean)) == (1000, "validation", 3)
    with pytest.raises(ValueError, match="cifar100.*fashion_mnist.*imagenet2012"):
        registry.get("mnist")
    assert registry.get("cifar10").info.num_train == 50_000
    assert registry.get("imagenet2012").info.num_test == 50_000
    prepared = tfds_builders.load_builder(registry.get("fashion_mnist"), fashion_dir)
    assert tfds_builders.split_size(prepared, "train") == NUM_TRAIN
    tiled = registry.get("fashion_mnist").info.with_channels(3)
    assert (tiled.mean, tiled.std) == ((0.2860,) * 3, (0.3530,) * 3)
    with pytest.raises(ValueError, match="policy"):
        fashion_train(fashion_dir, policy="mixup")
    with pytest.raises(ValueError, match="divisible"):
        fashion_train(fashion_dir, global_batch_size=5, process_count=2)


def check_pixels(images):
    """Views leave the host as uint8 pixels (the step normalises them), and are not blank."""
    assert images.dtype == np.uint8
    assert images.max() > images.min()


@pytest.mark.parametrize("dataset, policy", [("cifar10", "simclr"), ("imagenet2012", "simclr"),
                                             ("imagenet2012", "randaugment")])
def test_mock_train_batches(dataset, policy):
    with tfds.testing.mock_data(num_examples=8):
        batches = take(train_iterator(
            dataset=registry.get(dataset), data_dir=None, global_batch_size=4, image_size=32, policy=policy,
            num_views=2, seed=0, process_index=0, process_count=1), 3)
    num_classes = registry.get(dataset).info.num_classes
    for batch in batches:
        assert batch["image"].shape == (4, 2, 32, 32, 3)
        assert batch["label"].dtype == np.int32 and batch["label"].shape == (4,)
        assert np.all((batch["label"] >= 0) & (batch["label"] < num_classes))
        check_pixels(batch["image"])
        assert not np.array_equal(batch["image"][:, 0], batch["image"][:, 1])  # Two different views.


@pytest.mark.parametrize("dataset", ["cifar10", "imagenet2012"])
def test_mock_eval_batches(dataset):
    with tfds.testing.mock_data(num_examples=7):
        batches = list(ip.create_eval_iterator(dataset=registry.get(dataset), data_dir=None, global_batch_size=4,
                                               image_size=32, process_index=0, process_count=1))
    assert len(batches) == 2
    for batch in batches:
        assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].dtype == np.int32 and batch["mask"].dtype == bool
    assert [b["mask"].sum() for b in batches] == [4, 3]
    check_pixels(np.concatenate([b["image"][b["mask"]] for b in batches]))


def test_device_color_augment_leaves_colour_and_blur_to_the_step():
    """The same crops and flips either way; only the host-colour views had jitter, grayscale and blur applied."""
    batches = {}
    for device in (False, True):
        with tfds.testing.mock_data(num_examples=8):
            batches[device] = next(train_iterator(
                dataset=registry.get("imagenet2012"), data_dir=None, global_batch_size=8, image_size=48,
                policy="simclr", num_views=2, seed=0, process_index=0, process_count=1, device_color_augment=device))
    assert batches[True]["image"].dtype == batches[False]["image"].dtype == np.uint8
    np.testing.assert_array_equal(batches[True]["label"], batches[False]["label"])
    # Colour changes most views (p = 0.8 jitter, 0.2 grayscale, 0.5 blur); geometry alone leaves them alike.
    changed = np.mean([not np.array_equal(a, b) for a, b in zip(batches[True]["image"].reshape(16, -1),
                                                                batches[False]["image"].reshape(16, -1))])
    assert changed >= 0.75


def test_fashion_mnist_padding_and_channels(fashion_dir):
    batch = next(fashion_train(fashion_dir, num_views=2))
    assert batch["image"].shape == (4, 2, 32, 32, 1)
    np.testing.assert_array_equal(batch["image"][:, :, :2], 0)  # Padding is black.
    rgb = next(fashion_train(fashion_dir, channels=3, policy="simclr"))
    assert rgb["image"].shape == (4, 1, 32, 32, 3)
    evaluation = next(ip.create_eval_iterator(dataset=registry.get("fashion_mnist"), data_dir=fashion_dir,
                                              global_batch_size=4,
                                              image_size=32, process_index=0, process_count=1))
    assert evaluation["image"].shape == (4, 32, 32, 1)


def test_same_seed_same_batches_and_exact_resume(fashion_dir):
    # Batch 6 on 20 examples: epoch boundaries fall inside steps 3 and 6.
    kwargs = dict(global_batch_size=6, policy="simclr", num_views=2)
    reference = take(fashion_train(fashion_dir, **kwargs), 8)
    again = take(fashion_train(fashion_dir, **kwargs), 8)
    other_seed = take(fashion_train(fashion_dir, seed=1, **kwargs), 2)
    for start_step in (3, 4):  # Resume mid-epoch (crossing a boundary in the first batch) and after one.
        resumed = take(fashion_train(fashion_dir, start_step=start_step, **kwargs), 8 - start_step)
        for expected, got in zip(reference[start_step:], resumed):
            np.testing.assert_array_equal(expected["image"], got["image"])
            np.testing.assert_array_equal(expected["label"], got["label"])
    for expected, got in zip(reference, again):
        np.testing.assert_array_equal(expected["image"], got["image"])
    assert not np.array_equal(reference[0]["image"], other_seed[0]["image"])
    # An image met again in a later epoch gets new views: keys include the epoch.
    assert not np.array_equal(reference[0]["image"], reference[4]["image"])


def test_each_epoch_covers_the_split_in_a_new_order(fashion_dir):
    batches = take(fashion_train(fashion_dir), 10)  # Batch 4: exactly 5 steps per epoch.
    order = signatures(np.concatenate([b["image"][:, 0] for b in batches]))
    first, second = order[:NUM_TRAIN], order[NUM_TRAIN:]
    assert sorted(first) == sorted(second) == list(range(100, 100 + NUM_TRAIN))
    assert not np.array_equal(first, second)
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels, (order - 100) % 10)


def test_processes_read_disjoint_shares(fashion_dir):
    seen = []
    for process_index in range(2):  # Global batch 4, local 2: 5 local steps make one epoch of 10.
        batches = take(fashion_train(fashion_dir, process_index=process_index, process_count=2), 5)
        assert batches[0]["image"].shape == (2, 1, 32, 32, 1)
        seen.append(set(signatures(np.concatenate([b["image"][:, 0] for b in batches]))))
    assert len(seen[0]) == len(seen[1]) == NUM_TRAIN // 2
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(100, 100 + NUM_TRAIN))


def test_streaming_reader_reshuffles_files_every_epoch(fashion_source, tmp_path):
    """The ImageNet path (files re-read per epoch in a seeded order), on real tfds files in 4 shards."""
    tf = pytest.importorskip("tensorflow")
    builder = fmo.FashionMnistOffline(data_dir=str(tmp_path), source_dir=str(fashion_source))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=4))
    assert len(builder.info.splits["train"].shard_lengths) == 4

    def keys(first_epoch, seed=0):
        read_epoch, size = ip._epoch_reader(builder, "train", in_memory=False, encoded=False, seed=seed,
                                            process_index=0, shuffle_buffer=2)
        assert size == NUM_TRAIN
        epochs = tf.data.Dataset.range(first_epoch, 3).flat_map(read_epoch)
        return np.array([example["key"] for example in epochs.as_numpy_iterator()]).reshape(-1, NUM_TRAIN)

    all_epochs = keys(0)
    assert all(sorted(epoch) == sorted(all_epochs[0]) for epoch in all_epochs)  # Each epoch: every example.
    assert len(set(all_epochs[0])) == NUM_TRAIN
    assert not np.array_equal(all_epochs[0], all_epochs[1]) and not np.array_equal(all_epochs[1], all_epochs[2])
    np.testing.assert_array_equal(keys(1), all_epochs[1:])  # Epoch e's order depends on (seed, e) only.
    assert not np.array_equal(keys(0, seed=1), all_epochs)


@pytest.mark.parametrize("process_count, global_batch_size", [(2, 4), (3, 6)])
def test_eval_sees_every_example_once(fashion_dir, process_count, global_batch_size):
    seen, batch_counts = [], []
    for process_index in range(process_count):
        batches = list(ip.create_eval_iterator(
            dataset=registry.get("fashion_mnist"), data_dir=fashion_dir, global_batch_size=global_batch_size,
            image_size=32, process_index=process_index, process_count=process_count))
        batch_counts.append(len(batches))
        for batch in batches:
            assert batch["image"].shape[0] == global_batch_size // process_count
            seen.extend(signatures(batch["image"][batch["mask"]]))
            np.testing.assert_array_equal(batch["label"][batch["mask"]],
                                          (signatures(batch["image"][batch["mask"]]) - 200) % 10)
            assert np.all(batch["image"][~batch["mask"]] == 0)
    assert len(set(batch_counts)) == 1  # Every process makes the same number of eval steps.
    assert sorted(seen) == list(range(200, 200 + NUM_TEST))


def test_missing_imagenet_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        train_iterator(dataset=registry.get("imagenet2012"), data_dir=str(tmp_path), global_batch_size=2,
                                 image_size=32, policy="simclr", num_views=2, seed=0, process_index=0,
                                 process_count=1)
    message = str(error.value)
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
    assert os.path.join(str(tmp_path), "downloads", "manual") in message
    assert "tensorflow.org/datasets/catalog/imagenet2012" in message


def test_missing_fashion_mnist_files_through_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv(fmo.SOURCE_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        ip.create_eval_iterator(dataset=registry.get("fashion_mnist"), data_dir=str(tmp_path / "data"),
                                global_batch_size=2,
                                image_size=32, process_index=0, process_count=1)


def test_benchmark_runs():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    import input_pipeline_bench

    result = input_pipeline_bench.run(names=["read", "uint8+batch", "simclr_device"], num_images=4,
                                      source_size=(48, 64), image_size=32, batch_size=2, seconds=0.2, rounds=2,
                                      log=lambda line: None)
    rows = result["variants"]
    assert list(rows) == ["decode", "read", "uint8+batch", "simclr_device"]  # The floor is always measured.
    assert rows["decode"]["fraction_of_decode_floor"] == 1.0
    assert all(row["images_per_cpu_second"] > 0 for row in rows.values())
    assert rows["simclr_device"]["bytes_per_image"] == rows["uint8+batch"]["bytes_per_image"] == 2 * 32 * 32 * 3
    assert "| simclr_device |" in input_pipeline_bench.markdown(result)


@pytest.mark.slow
def test_importing_does_not_import_tensorflow():
    code = ("import sys, genscl_jax, genscl_jax.data, genscl_jax.data.registry, genscl_jax.data.synthetic, "
            "genscl_jax.data.device_augment; assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def _pretrain_on_fashion(workdir, fashion_source, fashion_dir, steps):
    """`python -m genscl_jax.main` pretraining on the tiny Fashion-MNIST through the tfds pipeline: simclr views with
    colour on the device, batch 4 of 20 examples (epochs end inside the run), a checkpoint every 3 steps."""
    args = ["--config", "configs/quickstart.py", "--config.mode=pretrain", "--config.width_multiplier=0.0625",
            "--config.image_size=32", "--config.head.hidden_dim=16", "--config.head.output_dim=8",
            "--config.batch_size=4", f"--config.num_train_steps={steps}", "--config.checkpoint_every_steps=3",
            "--config.log_every_steps=3", "--config.augment=simclr", "--config.device_color_augment=True",
            f"--config.data_dir={fashion_dir}", "--workdir", str(workdir)]
    env = dict(os.environ, **{fmo.SOURCE_DIR_ENV: str(fashion_source)})
    return subprocess.Popen([sys.executable, "-m", "genscl_jax.main", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _final(workdir):
    import json

    from genscl_jax.training import checkpointing

    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(workdir)), read_only=True)
    return summary, ckpt.restore_subtree(("params",))


@pytest.mark.slow
@pytest.mark.long(minutes=1)
def test_kill_9_then_resume_gives_the_uninterrupted_run_on_the_tfds_pipeline(fashion_source, fashion_dir, tmp_path):
    import signal
    import time

    import jax

    steps = 60
    straight = _pretrain_on_fashion(tmp_path / "straight", fashion_source, fashion_dir, steps)
    killed = _pretrain_on_fashion(tmp_path / "killed", fashion_source, fashion_dir, steps)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 400
    while time.time() < deadline and not (checkpoints.is_dir() and any(d.isdigit() for d in os.listdir(checkpoints))):
        assert killed.poll() is None, killed.communicate()[1][-3000:]
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)  # No handler, no final checkpoint: what a lost machine does.
    killed.communicate(timeout=60)
    saved = max(int(d) for d in os.listdir(checkpoints) if d.isdigit())
    assert 0 < saved < steps and not (tmp_path / "killed" / "summary.json").exists()
    resumed = _pretrain_on_fashion(tmp_path / "killed", fashion_source, fashion_dir, steps)
    for proc in (straight, resumed):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    assert f"resumed from step {saved}" in err
    (summary, params), (expected_summary, expected_params) = _final(tmp_path / "killed"), _final(tmp_path / "straight")
    assert summary["steps"] == expected_summary["steps"] == steps
    assert summary["final_loss"] == expected_summary["final_loss"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, expected_params)
