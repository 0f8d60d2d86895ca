"""The ImageNet recipe: every value names its source, SupCon's published ImageNet settings fill the GenSCL
paper's gaps, and its augmentation ("autoaugment") is accepted by validation and runs in the input pipeline."""

import os
import re

import numpy as np
import pytest
from helpers import CONFIG_DIR, load_recipe

from genscl_jax.config import defaults
from genscl_jax.config.validation import CHOICES, validate
from genscl_jax.data import views

RECIPE = os.path.join(CONFIG_DIR, "imagenet_resnet50.py")
# A value's comment must name one of these (configs/imagenet_resnet50.py defines the short names).
SOURCES = ("GENSCL", "SUPCON_SH", "SUPCON_FLAGS", "SUPCON_UTILS", "MOCO_V2", "google-research", "our choice",
           "required")


def recipe_assignments():
    """(line number, line, comment block above it) for each `config.X = ...` of get_config, runlocal excluded."""
    lines = open(RECIPE).read().splitlines()
    found, comments = [], []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("if arg.runlocal"):
            break
        if stripped.startswith("#"):
            comments.append(stripped)
        else:
            if re.match(r"config\.[\w.]+ = ", stripped):
                found.append((number, line, " ".join(comments)))
            comments = []  # A comment block covers the one assignment right below it.
    return found


def test_every_recipe_value_names_its_source():
    assignments = recipe_assignments()
    assert len(assignments) > 40
    for number, line, comments_above in assignments:
        comment = line.partition("#")[2] + " " + comments_above
        assert any(source.lower() in comment.lower() for source in SOURCES), \
            f"imagenet_resnet50.py:{number} has no source: {line}"


def test_recipe_is_supcon_imagenet_where_the_paper_is_silent():
    config = load_recipe("imagenet_resnet50.py")
    # supcon/scripts/supcon_imagenet_resnet50.sh and the hparams_flags.py defaults it keeps.
    assert (config.optimizer, config.learning_rate, config.lr_batch_scaling) == ("lars", 0.4, True)
    assert (config.weight_decay, config.num_epochs, config.warmup_epochs) == (1e-3, 350, 12.0)
    assert (config.momentum, config.warmup_start_lr, config.min_lr_factor) == (0.9, 0.0, 0.0)
    assert (config.augment, config.temperature, config.dtype) == ("autoaugment", 0.1, "bfloat16")
    assert tuple(config.crop_scale) == (0.08, 1.0)  # hparams_flags.py crop_area_range
    # MoCo v2: a constant 0.999 momentum, a 65536-key queue, a 2048-2048-128 head.
    assert (config.moco.momentum, config.moco.momentum_cosine, config.moco.queue_size) == (0.999, False, 65536)
    assert (config.head.kind, config.head.hidden_dim, config.head.output_dim) == ("mlp", 2048, 128)
    # The GenSCL paper's linear evaluation.
    le = config.linear_eval
    assert (le.batch_size, le.num_epochs, le.learning_rate, tuple(le.decay_epochs)) == (512, 100, 5.0, (60, 75, 90))


def test_runlocal_keeps_the_recipe_and_validates():
    config, local = load_recipe("imagenet_resnet50.py"), load_recipe("imagenet_resnet50.py", "runlocal")
    assert local.dataset == "synthetic" and local.batch_size < config.batch_size
    for key in ("optimizer", "learning_rate", "weight_decay", "augment", "temperature"):
        assert local[key] == config[key], key
    local.kd.teacher = "/some/teacher"
    validate(local, num_devices=1)


def test_validation_accepts_exactly_the_augment_policies():
    assert CHOICES["augment"] == views.POLICIES and "autoaugment" in CHOICES["augment"]
    config = defaults.base_config()
    config.dataset, config.augment = "synthetic", "autoaugment"
    validate(config, num_devices=1)


def test_imagenet_pipeline_runs_autoaugment():
    tfds = pytest.importorskip("tensorflow_datasets")
    from genscl_jax.data import registry
    from genscl_jax.data import tf_pipeline as ip
    with tfds.testing.mock_data(num_examples=8):
        entry = registry.get("imagenet2012")
        iterator = ip.create_train_iterator(
            dataset=entry, data_dir=None, global_batch_size=4, plan=views.resolve("autoaugment", entry, image_size=32),
            num_views=2, seed=0, process_index=0, process_count=1)
        batch = next(iterator)
    assert batch["image"].shape == (4, 2, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert not np.array_equal(batch["image"][:, 0], batch["image"][:, 1])


def test_gpu8_runs_the_paper_batch_in_micro_batches_on_eight_devices():
    config = load_recipe("imagenet_resnet50.py", "gpu8")
    assert config.batch_size == 4096 and config.micro_batch_size and config.loss_block_size
    assert (config.batch_size // 8) % (config.batch_size // config.micro_batch_size) == 0  # per-GPU rows split evenly
    config.kd.teacher = "/some/teacher"
    validate(config, num_devices=8)
    local = load_recipe("imagenet_resnet50.py", "gpu8,runlocal")
    assert local.micro_batch_size == 8 and local.batch_size % local.micro_batch_size == 0
    local.kd.teacher = "/some/teacher"
    validate(local, num_devices=1)
