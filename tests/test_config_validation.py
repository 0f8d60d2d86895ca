"""Every bad config is rejected before anything is compiled or read, with one line naming the key."""

import importlib.util
import os

import ml_collections
import pytest
from conftest import set_keys

from genscl_jax import config_defaults
from genscl_jax.config_validation import ConfigError, validate

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")
RECIPES = sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".py"))


def load_recipe(name, arg=""):
    spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(CONFIG_DIR, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


SHARED_KEYS = ("mode", "dataset", "model", "image_size", "batch_size", "num_train_steps", "num_epochs", "optimizer",
               "learning_rate", "weight_decay", "warmup_epochs", "temperature", "seed", "dtype", "mix.kind",
               "mix.alpha", "kd.alpha", "kd.temperature", "kd.teacher", "moco.enabled", "moco.queue_size",
               "moco.momentum", "checkpoint_every_steps", "log_every_steps")


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_has_the_shared_keys_and_validates(recipe):
    config = load_recipe(recipe)
    for key in SHARED_KEYS:
        node = config
        for part in key.split("."):
            node = node[part]
    if config.kd.alpha > 0 and not config.kd.teacher:
        config.kd.teacher = "/some/teacher"  # the ImageNet recipe requires the user to name one
    validate(config, num_devices=8)
    runlocal = load_recipe(recipe, "runlocal")
    runlocal.kd.teacher = config.kd.teacher
    validate(runlocal, num_devices=1)


def test_imagenet_recipe_is_paper_scale():
    config = load_recipe("imagenet_resnet50.py")
    assert (config.model, config.image_size, config.batch_size) == ("resnet50", 224, 4096)
    assert config.moco.enabled and config.optimizer == "lars" and config.dtype == "bfloat16"
    assert config.mix.kind == "mixup_cutmix" and config.kd.alpha > 0


def test_imagenet_recipe_without_teacher_says_how_to_fix():
    with pytest.raises(ConfigError, match="kd.teacher is empty"):
        validate(load_recipe("imagenet_resnet50.py"), num_devices=8)


def base(**changes):
    config = config_defaults.base_config()
    config.dataset = "synthetic"
    return set_keys(config, changes)


@pytest.mark.parametrize("changes, message", [
    ({"mode": "train"}, r"config.mode='train': unknown value; allowed: pretrain"),
    ({"model": "resnet51"}, r"config.model='resnet51'.*resnet50"),
    ({"dataset": "mnist"}, r"config.dataset='mnist'.*cifar10"),
    ({"optimizer": "adam"}, r"config.optimizer='adam'.*lars"),
    ({"mix.kind": "cutmixup"}, r"config.mix.kind='cutmixup'.*mixup_cutmix"),
    ({"dtype": "float16"}, r"config.dtype='float16'.*bfloat16"),
    ({"batch_size": 12}, r"config.batch_size=12 is not divisible by the 8 devices"),
    ({"moco.enabled": True, "batch_size": 64, "moco.queue_size": 100}, r"queue_size=100 is not a positive multiple"),
    ({"moco.enabled": True, "batch_size": 64, "moco.queue_size": 64}, r"smaller than the 128 keys"),
    ({"kd.alpha": 1.0}, r"kd.teacher is empty"),
    ({"temperature": 0.0}, r"config.temperature=0.0: must be > 0"),
    ({"num_epochs": 0, "num_train_steps": 0}, r"both 0"),
    ({"mode": "linear_eval"}, r"pretrained_workdir is empty"),
    ({"knn.k": 0}, r"config.knn.k=0: must be > 0"),
    ({"knn.every_steps": -1}, r"config.knn.every_steps=-1: must be >= 0"),
])
def test_bad_values_name_the_key_and_what_is_allowed(changes, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate(base(**changes), num_devices=8)
    assert "\n" not in str(info.value)


def test_unknown_key_is_rejected_with_a_suggestion():
    config = base()
    config.unlock()
    config.moco.queue = 4096
    with pytest.raises(ConfigError, match=r"config.moco.queue: unknown key \(did you mean moco.queue_size\?\)"):
        validate(config, num_devices=1)


def test_wrong_type_is_rejected():
    # A config file may build its own ConfigDict instead of starting from base_config(): no type checks then.
    values = base().to_dict()
    values["batch_size"] = "256"
    config = ml_collections.ConfigDict(values)
    with pytest.raises(ConfigError, match=r"config.batch_size='256': expected int, got str"):
        validate(config, num_devices=1)


def test_ints_are_accepted_for_floats_and_infinite_alpha_is_fine():
    validate(base(learning_rate=1, **{"kd.alpha": float("inf"), "kd.teacher": "/t"}), num_devices=1)
