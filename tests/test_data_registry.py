"""The dataset registry: one DatasetInfo per dataset, channel tiling in one place, the entry free of TensorFlow."""

import importlib
import os
import subprocess
import sys

import pytest

from genscl_jax import data
from genscl_jax.config import defaults
from genscl_jax.data import registry

ROOT = os.path.dirname(os.path.dirname(__file__))


def test_one_channel_statistics_tile_and_per_channel_ones_do_not():
    fashion = registry.get("fashion_mnist").info
    assert fashion.with_channels(0) is fashion and fashion.with_channels(None) is fashion
    rgb = fashion.with_channels(3)
    assert (rgb.channels, rgb.mean, rgb.std) == (3, (0.2860,) * 3, (0.3530,) * 3)
    assert rgb.num_classes == fashion.num_classes and rgb.num_train == fashion.num_train
    gray = registry.get("synthetic").info.with_channels(1)  # The generator makes any channel count.
    assert (gray.channels, gray.mean, gray.std) == (1, (0.5,), (0.125,))
    with pytest.raises(ValueError, match="channels=1 is not supported.*set channels to 0"):
        registry.get("cifar10").info.with_channels(1)


def test_data_spec_is_the_registry_entry_at_the_configured_channels():
    config = defaults.base_config()
    config.dataset, config.channels = "fashion_mnist", 3
    assert data.resolve(config).info == registry.get("fashion_mnist").info.with_channels(3)
    config.dataset, config.channels = "imagenet2012", 0
    spec = data.resolve(config).info
    assert (spec.num_classes, spec.num_train, spec.split_name("test")) == (1000, 1_281_167, "validation")
    config.dataset = "mnist"
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; choose from \['cifar10'"):
        data.resolve(config)


def test_entries_are_complete():
    for name, entry in registry.DATASETS.items():
        info = entry.info
        assert entry.reader in registry.READERS, name
        assert len(info.mean) == len(info.std) == info.channels, name
        assert info.num_classes > 1 and info.num_train > 0 and info.num_test > 0, name
        assert entry.reader != "tfds" or entry.tfds_name, name
    assert registry.NAMES == tuple(registry.DATASETS)


def test_builder_hooks_name_a_function():
    """A hook is a "module:function" string (so the registry imports no tfds): a typo must fail here, not in a run."""
    pytest.importorskip("tensorflow_datasets")
    hooks = [entry.builder for entry in registry.DATASETS.values() if entry.builder]
    assert hooks
    for hook in hooks:
        module, function = hook.split(":")
        assert callable(getattr(importlib.import_module(module), function)), hook


@pytest.mark.slow
def test_the_entry_and_the_registry_import_no_tensorflow():
    """Facts of every dataset, tfds ones included, come without TensorFlow; only reading a tfds one loads it."""
    code = ("import sys\nfrom genscl_jax import data\nfrom genscl_jax.config import defaults\n"
            "c = defaults.base_config()\n"
            "for name in data.registry.NAMES:\n    c.dataset = name\n"
            "    data.resolve(c).steps_per_epoch(c.batch_size)\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
