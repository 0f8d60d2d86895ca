"""Every bad config is rejected before anything is compiled or read, with one line naming the key."""

import os

import ml_collections
import pytest
from conftest import set_keys
from helpers import CONFIG_DIR, load_recipe

from genscl_jax.config import defaults, recipes
from genscl_jax.config.validation import ConfigError, validate

RECIPES = sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and not f.startswith("_"))


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
    config = defaults.base_config()
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
    ({"eval_every_steps": -1}, r"config.eval_every_steps=-1: must be >= 0"),
    ({"online_probe.optimizer": "adam"}, r"config.online_probe.optimizer='adam': unknown value; allowed: sgd"),
    ({"online_probe.learning_rate": 0.0}, r"config.online_probe.learning_rate=0.0: must be > 0"),
    ({"train_subset": -1}, r"config.train_subset=-1: must be >= 0"),
    ({"mix.prob": 1.5}, r"config.mix.prob=1.5: must be in \[0, 1\]"),
    ({"mix.prob": -0.1}, r"config.mix.prob=-0.1: must be in \[0, 1\]"),
    ({"linear_eval.recalibrate_batch_stats": -1}, r"config.linear_eval.recalibrate_batch_stats=-1: must be >= 0"),
    ({"micro_batch_size": 96}, r"config.micro_batch_size=96 does not divide config.batch_size=1024; use a divisor"),
    ({"micro_batch_size": 4}, r"config.micro_batch_size=4 is not divisible by the 8 devices.*use e.g. 8"),
    ({"bn_group_size": 12}, r"config.bn_group_size=12 does not divide"),
    ({"micro_batch_size": -8}, r"config.micro_batch_size=-8: must be >= 0"),
    ({"micro_batch_size": 128, "bn_group_size": 64}, r"bn_group_size=64 differs from config.micro_batch_size=128"),
    ({"mode": "linear_eval", "micro_batch_size": 128}, r"micro_batch_size=128: mode linear_eval has no such step"),
    ({"mode": "linear_eval", "remat": "blocks"}, r"config.remat='blocks': mode linear_eval trains no encoder"),
    ({"remat": "layers"}, r"config.remat='layers': unknown value; allowed: none, blocks"),
    ({"crop_scale": (0.0, 1.0)}, r"config.crop_scale=\(0.0, 1.0\): give \(low, high\) area fractions"),
    ({"linear_eval.crop_scale": (0.5, 0.2)}, r"config.linear_eval.crop_scale=\(0.5, 0.2\): give"),
    ({"crop_scale": (0.2,)}, r"config.crop_scale=\(0.2,\): give"),
    ({"color_jitter": (0.4, 0.4, 0.4, 0.6)}, r"config.color_jitter=.*hue <= 0.5"),
    ({"color_jitter": (-0.1, 0.4, 0.4, 0.1)}, r"config.color_jitter=.*>= 0"),
    ({"grayscale_prob": 1.5}, r"config.grayscale_prob=1.5: must be in \[0, 1\]"),
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


def test_the_replaced_knn_schedule_key_says_where_it_went():
    config = base()
    config.unlock()
    config.knn.every_steps = 100
    with pytest.raises(ConfigError, match=r"config.knn.every_steps: no longer a key; use config.eval_every_steps"):
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


def test_allowed_values_beside_each_key_match_the_lists_validation_uses():
    """defaults.py writes "one of: a | b" beside (or above) each key with a fixed set of values; the lists
    live with the code that implements them (validation.CHOICES), so the comments must not drift."""
    import re

    from genscl_jax.config import validation

    source = open(defaults.__file__).read().splitlines()
    documented, pending = {}, None
    for line in source:
        comment = re.search(r"# one of: ([\w | ]+)", line)
        values = tuple(v.strip() for v in comment.group(1).split("|")) if comment else None
        assignment = re.match(r"\s*c\.([\w.]+) = ", line)
        if assignment:
            documented[assignment.group(1)] = values or pending
            pending = None
        elif values:
            pending = values  # a comment line above the key it documents
    for key, allowed in validation.CHOICES.items():
        assert documented.get(key) is not None, f"defaults.py: no 'one of:' beside {key}"
        assert tuple(v.split(" ")[0] for v in documented[key]) == tuple(allowed), key
    assert {k for k, v in documented.items() if v} == set(validation.CHOICES)


@pytest.mark.parametrize("key, value", [("linear_eval.augment", "crops"), ("kd.teacher_stem", "cifar10")])
def test_every_choice_key_is_validated(key, value):
    config = set_keys(defaults.base_config(), {key: value, "kd.alpha": 1.0, "kd.teacher": "/t"})
    with pytest.raises(ConfigError, match=f"config.{key}={value!r}: unknown value"):
        validate(config, num_devices=1)


def test_recipe_arguments_parse_like_big_vision():
    arg = recipes.parse_arg("runlocal,steps=7,lr=0.5,tag=x", runlocal=False, steps=0, lr=0.1, tag="")
    assert (arg.runlocal, arg.steps, arg.lr, arg.tag) == (True, 7, 0.5, "x")
    assert recipes.parse_arg("", runlocal=False).runlocal is False
    assert recipes.parse_arg("runlocal=false", runlocal=True).runlocal is False
    with pytest.raises(ValueError, match="'runlocl' is unknown; this recipe takes: runlocal"):
        recipes.parse_arg("runlocl", runlocal=False)
    with pytest.raises(ValueError, match="steps='many': expected int"):
        recipes.parse_arg("steps=many", steps=0)
    with pytest.raises(ValueError, match="'steps' needs a value"):
        recipes.parse_arg("steps", steps=0)


@pytest.mark.parametrize("name, hint", [("pretrained_workdir", "linear_eval.pretrained_workdir"),
                                        ("mix.knd", "mix.kind"), ("batchsize", "batch_size")])
def test_unknown_keys_name_the_closest_ones(name, hint):
    from genscl_jax.config import keys

    error = keys.unknown_key_error(name)
    assert str(error).startswith(f"config.{name}: unknown key (did you mean {hint}")
    assert keys.unknown_key_error("linear_eval.batch_size") is None
    # The file it points to for all keys is where they are.
    named = str(error).rsplit("see ", 1)[1].split(" ", 1)[0]
    assert os.path.isfile(os.path.join(os.path.dirname(__file__), "..", named)), named
