"""The view plan: the augmentation policy read once (data/views.py), into what each view gets and where."""

import os
import re

import pytest

from genscl_jax.config import defaults
from genscl_jax.data import registry, views

ROOT = os.path.join(os.path.dirname(__file__), "..", "genscl_jax")
IMAGENET, CIFAR = registry.get("imagenet2012"), registry.get("cifar10")


def test_each_policy_resolves_to_its_ops_and_places():
    simclr = views.resolve("simclr", IMAGENET, image_size=224)
    assert simclr.random and simclr.color == views.ColorJitter() and simclr.blur_prob == 0.5
    assert (simclr.host_color, simclr.host_blur_prob, simclr.device_color) == (views.ColorJitter(), 0.5, None)
    on_device = views.resolve("simclr", IMAGENET, image_size=224, device_color_augment=True)
    assert (on_device.host_color, on_device.host_blur_prob) == (None, 0.0)
    assert (on_device.device_color, on_device.device_blur_prob) == (views.ColorJitter(), 0.5)
    assert views.resolve("simclr", CIFAR, image_size=32).blur_prob == 0.0  # blur only for photos
    for policy in ("autoaugment", "randaugment", "crop_flip"):  # no device version: the switch changes nothing
        plan = views.resolve(policy, IMAGENET, image_size=64, device_color_augment=True)
        assert plan.random and not plan.device_color_augment and plan.color is None and plan.blur_prob == 0.0
    assert views.resolve("autoaugment", IMAGENET, image_size=64).auto_augment
    assert views.resolve("randaugment", IMAGENET, image_size=64).rand_augment == views.RandAugment()
    assert not views.resolve("none", IMAGENET, image_size=64).random
    with pytest.raises(ValueError, match="unknown augmentation policy 'mixup'"):
        views.resolve("mixup", IMAGENET, image_size=64)


def test_the_config_keys_reach_the_plans():
    config = defaults.base_config()
    config.crop_scale, config.linear_eval.crop_scale = (0.3, 0.9), (0.08, 1.0)
    config.color_jitter, config.color_jitter_prob, config.grayscale_prob = (0.8, 0.8, 0.8, 0.2), 0.5, 0.1
    config.linear_eval.augment = "simclr"
    plans = views.from_config(config, CIFAR)
    assert plans.train.crop_scale == (0.3, 0.9) and plans.linear_eval.crop_scale == (0.08, 1.0)
    assert plans.train.color == plans.linear_eval.color == views.ColorJitter((0.8, 0.8, 0.8, 0.2), 0.5, 0.1)
    assert not plans.evaluation.random


POLICY_NAMES = re.compile(r'"(simclr|autoaugment|randaugment|crop_flip)"|\b(policy|augment) (==|!=|in) ')


def test_only_the_view_plan_reads_the_policy():
    """No library module but data/views.py names a policy or compares one (config/defaults.py holds the default;
    tools choose a policy for their benchmarks, they do not interpret it)."""
    readers = []
    for folder, _, files in os.walk(ROOT):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, ROOT)
            if not name.endswith(".py") or rel.startswith("tools") or rel in ("data/views.py", "config/defaults.py"):
                continue
            if POLICY_NAMES.search(open(path).read()):
                readers.append(rel)
    assert readers == []
