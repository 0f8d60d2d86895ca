"""Helpers more than one test file uses (test files never import each other): the tiny configs, a tiny teacher and a
few compiled steps, tree equality, random loss inputs, a tiny Fashion-MNIST file set, the recipes, a free port. It
imports no torch (conftest does, for the weight-conversion tests), so the scripts tests run in subprocesses use it."""

import functools
import importlib
import os
import json
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from genscl_jax.config import defaults, recipes

ROOT = os.path.join(os.path.dirname(__file__), "..")
CONFIG_DIR = os.path.join(ROOT, "configs")
PACKAGE_DIR = os.path.abspath(os.path.join(ROOT, "genscl_jax"))
FASHION_MNIST_TRAIN, FASHION_MNIST_TEST = 20, 10

# Watching a run (the kNN evaluation and the online probe, on by default) is a third of a tiny run's compile time,
# and most tests are about something else: the tiny configs leave it off, and the tests of it switch it on.
WATCHING_OFF = {"knn.enabled": False, "online_probe.enabled": False}


def make_tiny_config(**overrides):
    """A synthetic-data pretraining config with the ~20k-parameter tiny ResNet at 8 px (recipes.shrink_to_tiny),
    without the kNN evaluation and the online probe unless `overrides` switch them on."""
    config = recipes.shrink_to_tiny(defaults.base_config())
    config.learning_rate = 0.05
    config.warmup_epochs = 0.0
    return set_keys(config, {**WATCHING_OFF, **overrides})


set_keys = recipes.set_keys


def jit_init(module, key, *inputs, **static):
    """module.init(key, *inputs, **static) as one compiled program: an eager init compiles each of the network's
    ops on its own (~100 for the tiny ResNet, several seconds where one jitted compile takes about one)."""
    return jax.jit(functools.partial(module.init, **static))(key, *inputs)


def tiny_teacher(config, num_classes=10, seed=3):
    from genscl_jax import models
    from genscl_jax.trainers import teachers

    module = models.create_resnet("resnet10", stem="cifar", width_multiplier=0.0625, num_classes=num_classes)
    variables = jit_init(module, jax.random.PRNGKey(seed), jnp.zeros((1, config.image_size, config.image_size, 3)),
                         train=False)
    return teachers.Teacher(module, variables)


def run_steps(config, num_steps, teacher=None):
    """The pretraining trainer of `config` and its state and metrics after `num_steps` steps."""
    from genscl_jax import data
    from genscl_jax.runtime import parallel
    from genscl_jax.trainers import pretrain

    trainer = pretrain.build_trainer(config, parallel.create_mesh(), data.resolve(config), teacher=teacher)
    state, history = trainer.state, []
    batches = trainer.batches(0)
    for _ in range(num_steps):
        state, metrics = trainer.train_step(state, next(batches))
        history.append(jax.device_get(metrics))
    return trainer, state, history


def assert_trees_equal(a, b):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def random_loss_inputs(seed, n, m, dim=16, classes=7):
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    unit = lambda x: x / jnp.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return dict(features=unit(jax.random.normal(k[0], (n, dim))),
                labels=jax.nn.softmax(3 * jax.random.normal(k[1], (n, classes))),
                contrast_features=unit(jax.random.normal(k[2], (m, dim))),
                contrast_labels=jax.nn.softmax(3 * jax.random.normal(k[3], (m, classes))),
                contrast_mask=jax.random.bernoulli(k[4], 0.7, (m,)))


def write_tiny_fashion_mnist(directory, num_train=FASHION_MNIST_TRAIN, num_test=FASHION_MNIST_TEST, seed=0):
    """Random images whose pixel (0, 0) is unique per example (train 100 + i, test 200 + i); label i % 10."""
    from genscl_jax.data import fashion_mnist_offline as fmo  # imports tensorflow_datasets

    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count, base in (("train", num_train, 100), ("test", num_test, 200)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = base + np.arange(count)
        labels = (np.arange(count) % 10).astype(np.uint8)
        image_file, label_file = fmo.SPLIT_FILES[split]
        fmo.write_idx(os.path.join(directory, image_file), images)
        fmo.write_idx(os.path.join(directory, label_file), labels)
        arrays[split] = (images, labels)
    return arrays


def load_recipe(name, arg=""):
    return importlib.import_module(f"configs.{name[:-3]}").get_config(arg)


def run_on_eight_devices(*python_args):
    """The JSON line that `python *python_args` (a script, or "-c", code) prints, run from the repository in a process
    with 8 virtual CPU devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    proc = subprocess.run([sys.executable, *python_args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# Image folders (dataset=image_folder) written by the tests: test_image_folder.py and test_train_subset.py.
CLASSES = {"zebra": 4, "ant": 4, "cat": 4}  # Written in this order; labels must follow the sorted names.


def class_image(label, index, size=16, channels=3):
    """A distinct image per class (its own colour) with a little per-image noise: learnable, and exact in PNG."""
    rng = np.random.default_rng(100 * label + index)
    colour = np.array([60 + 90 * (label % 3), 40 * label + 30, 200 - 60 * label])[:channels]
    image = colour + rng.integers(-20, 20, size=(size, size, channels))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_image(path, image, fmt="png"):
    import tensorflow as tf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    encoded = tf.io.encode_png(image) if fmt == "png" else tf.io.encode_jpeg(image)
    tf.io.write_file(str(path), encoded)


def write_folder(root, classes=CLASSES, test="test", channels=3, test_counts=2):
    """root/train/CLASS/i.png and root/<test>/CLASS/i.jpg; returns {split: [(array, class name)]}."""
    written = {"train": [], test: []}
    for label, name in enumerate(sorted(classes)):
        for i in range(classes[name]):
            image = class_image(label, i, channels=channels)
            write_image(os.path.join(root, "train", name, f"{i}.png"), image)
            written["train"].append((image, name))
        for i in range(test_counts):
            image = class_image(label, 50 + i, channels=channels)
            write_image(os.path.join(root, test, name, f"{i}.jpg"), image, fmt="jpeg")
            written[test].append((image, name))
    return written


def folder_config(root, **overrides):
    from genscl_jax.config import defaults

    config = defaults.base_config()
    config.dataset, config.data_dir = "image_folder", str(root)
    for key, value in overrides.items():
        config[key] = value
    return config


def clear_dataset_entries():
    """Forget the dataset entries a process caches, so a test starts as a new process would."""
    from genscl_jax import data

    data.source._image_folder_entry.cache_clear()
    data.source._tfds_entry.cache_clear()


def execute_study_row_in_this_process(run):
    """study.execute's work without its subprocess: the row's argv loaded as the command line loads it
    (plan.load_config), runner.run in this process, the row's console and our INFO lines appended to
    <workdir>/log.txt; returns its summary. A subprocess costs each row ~12 s of imports (TensorFlow's 8) on a 2-core
    machine; the study tests run their rows here and keep one row's subprocess (study.execute) to show that the
    recorded argv alone reproduces it."""
    import contextlib
    import logging

    from absl import logging as absl_logging

    from genscl_jax import runner
    from genscl_jax.tools import plan

    recipe, overrides = run.argv[1], run.argv[2:]
    assert run.argv[0] == "--config" and all(a.startswith("--config.") for a in overrides), run.argv
    config = plan.load_config(recipe, overrides)
    os.makedirs(run.workdir, exist_ok=True)
    verbosity = absl_logging.get_verbosity()
    with open(os.path.join(run.workdir, "log.txt"), "a") as log, contextlib.redirect_stderr(log):
        ours = logging.StreamHandler(log)
        ours.addFilter(lambda record: record.pathname.startswith(PACKAGE_DIR))
        logging.root.addHandler(ours)
        absl_logging.set_verbosity(absl_logging.INFO)
        try:
            return runner.run(config, run.workdir, recipe=recipe)
        finally:
            absl_logging.set_verbosity(verbosity)
            logging.root.removeHandler(ours)
