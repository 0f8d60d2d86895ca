"""Checks a run's config before anything is compiled or read, so a typo costs a second, not a compile.

Every failure is one `ConfigError` line that names the key, what it got and what is allowed.
"""

from __future__ import annotations

import difflib
from typing import Any

from genscl_jax import models
from genscl_jax.config import defaults
from genscl_jax.data import registry
from genscl_jax.models import model_builder
from genscl_jax.objectives import losses, mixing
from genscl_jax.runtime import compile_options
from genscl_jax.training import optimizers

# Each list of allowed values lives with the code that implements it; validation only reads them.
CHOICES = {
    "mode": defaults.MODES,
    "dataset": registry.CHOICES,
    "model": models.MODEL_NAMES,
    "stem": model_builder.STEMS,
    "dtype": model_builder.DTYPES,
    "head.kind": models.HEAD_KINDS,
    "optimizer": optimizers.OPTIMIZERS,
    "mix.kind": mixing.MIX_KINDS,
    "augment": registry.POLICIES,
    "linear_eval.augment": registry.POLICIES,
    "loss_normalization": losses.NORMALIZATIONS,
    "cpu_convolutions": compile_options.CPU_CONVOLUTIONS,
    "kd.teacher_model": models.MODEL_NAMES,
    "kd.teacher_stem": model_builder.STEMS,
    "kd.teacher_dtype": model_builder.DTYPES,
    "remat": models.REMAT,
}
# Checked only when that feature is on (a teacher's architecture is irrelevant without a teacher).
_CONDITIONAL = {"kd.teacher_model": lambda c: c.kd.alpha > 0, "kd.teacher_stem": lambda c: c.kd.alpha > 0,
                "kd.teacher_dtype": lambda c: c.kd.alpha > 0}
# Values accepted besides the listed ones, and how the error message names them.
_OPEN_CHOICES = {"dataset": (registry.is_tfds_name, "tfds:NAME (any tfds dataset)")}


class ConfigError(ValueError):
    """A config value that cannot run; the message is one line naming the key and the fix."""


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    items = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            items.update(_flatten(value, name + "."))
        else:
            items[name] = value
    return items


def unknown_key_error(name: str) -> ConfigError | None:
    """None if `name` ("linear_eval.batch_size") is a config key, else the one-line error, with the closest keys."""
    known = list(_flatten(defaults.base_config()))
    if name in known:
        return None
    leaf = name.rsplit(".", 1)[-1]
    # The right key under another parent, else the closest spelling.
    close = [k for k in known if k.rsplit(".", 1)[-1] == leaf] or difflib.get_close_matches(name, known, n=1,
                                                                                          cutoff=0.6)
    hint = f" (did you mean {' or '.join(close[:2])}?)" if close else ""
    return ConfigError(f"config.{name}: unknown key{hint}; see genscl_jax/defaults.py for all keys")


def _check_keys_and_types(config: Any) -> None:
    known = _flatten(defaults.base_config())
    given = _flatten(config)
    for name, value in given.items():
        error = unknown_key_error(name)
        if error:
            raise error
        expected = type(known[name])
        ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
        if not ok or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"config.{name}={value!r}: expected {expected.__name__}, got {type(value).__name__}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    accepts, described = _OPEN_CHOICES.get(name, (lambda value: False, ""))
    if value not in allowed and not accepts(value):
        names = allowed + (described,) if described else allowed
        raise ConfigError(f"config.{name}={value!r}: unknown value; allowed: {', '.join(names)}")


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"config.{name}={value!r}: must be {bound}")


def validate(config: Any, num_devices: int, num_processes: int = 1) -> None:
    """Raises ConfigError on the first problem found. Reads nothing and compiles nothing."""
    _check_keys_and_types(config)
    flat = _flatten(config)
    for name, allowed in CHOICES.items():
        if name not in _CONDITIONAL or _CONDITIONAL[name](config):
            _choice(name, flat[name], allowed)
    for name in ("batch_size", "image_size", "learning_rate", "temperature", "base_temperature", "num_views",
                 "width_multiplier", "log_every_steps", "checkpoint_every_steps", "eval_batch_size",
                 "preemption_check_every_steps"):
        _positive(name, config[name])
    for name in ("num_train_steps", "weight_decay", "warmup_epochs", "num_epochs", "loss_block_size",
                 "micro_batch_size", "bn_group_size"):
        _positive(name, config[name], allow_zero=True)
    if config.num_train_steps == 0 and config.num_epochs == 0:
        raise ConfigError("config.num_train_steps and config.num_epochs are both 0: set one of them")
    _check_batch(config, num_devices, num_processes)
    _check_micro_batches(config, num_devices)
    _check_data(config)
    _check_kd(config)
    _check_moco(config)
    _check_knn(config)
    if config.mode == "linear_eval" and not config.linear_eval.pretrained_workdir:
        raise ConfigError("config.linear_eval.pretrained_workdir is empty: mode linear_eval needs the workdir "
                          "of a pretraining run (or use mode pretrain_and_eval)")


def _check_batch(config: Any, num_devices: int, num_processes: int) -> None:
    if config.batch_size % num_devices:
        raise ConfigError(f"config.batch_size={config.batch_size} is not divisible by the {num_devices} devices; "
                          f"use a multiple of {num_devices}")
    if config.batch_size % num_processes:
        raise ConfigError(f"config.batch_size={config.batch_size} is not divisible by the {num_processes} "
                          "processes")
    if config.num_views < 1:
        raise ConfigError(f"config.num_views={config.num_views}: must be >= 1")


# The modes whose training step runs the encoder in micro-batches and BatchNorm groups (linear evaluation trains a
# linear layer on a frozen encoder).
_MICRO_BATCH_MODES = ("pretrain", "pretrain_and_eval", "supervised")


def _check_micro_batches(config: Any, num_devices: int) -> None:
    """micro_batch_size and bn_group_size: strided groups of source images that span every device equally."""
    micro, group, batch = config.micro_batch_size, config.bn_group_size, config.batch_size
    for name, size in (("micro_batch_size", micro), ("bn_group_size", group)):
        if not size:
            continue
        if config.mode not in _MICRO_BATCH_MODES:
            raise ConfigError(f"config.{name}={size}: mode {config.mode} has no such step (it applies to "
                              f"{', '.join(_MICRO_BATCH_MODES)}); set it to 0")
        if batch % size:
            raise ConfigError(f"config.{name}={size} does not divide config.batch_size={batch}; use a divisor, "
                              f"e.g. {_divisor_near(batch, size, num_devices)}")
        if size % num_devices:
            raise ConfigError(f"config.{name}={size} is not divisible by the {num_devices} devices (each "
                              f"micro-batch takes the same number of images from every device); use e.g. "
                              f"{_divisor_near(batch, size, num_devices)}")
    if micro and group and group != micro:
        raise ConfigError(f"config.bn_group_size={group} differs from config.micro_batch_size={micro}: a "
                          "micro-batched step normalises each micro-batch with its own statistics; set "
                          "bn_group_size to 0 or to micro_batch_size")
    if config.remat != "none" and config.mode not in _MICRO_BATCH_MODES:
        raise ConfigError(f"config.remat={config.remat!r}: mode {config.mode} trains no encoder; set it to 'none'")


def _divisor_near(batch: int, size: int, num_devices: int) -> int:
    """The divisor of `batch` that is a multiple of `num_devices` closest to `size` (the batch itself at worst)."""
    candidates = [d for d in range(num_devices, batch + 1, num_devices) if batch % d == 0]
    return min(candidates, key=lambda d: (abs(d - size), d))


def _check_data(config: Any) -> None:
    if config.dataset == registry.IMAGE_FOLDER and not config.data_dir:
        raise ConfigError("config.data_dir is empty: dataset image_folder reads its images from data_dir/train/CLASS/ "
                          "and data_dir/test/CLASS/ (local or gs://)")
    if not registry.is_discovered(config.dataset):
        for key in ("train_split", "test_split"):
            if config[key]:
                raise ConfigError(f"config.{key}={config[key]!r}: only image_folder and tfds:NAME datasets take "
                                  f"splits; use dataset=tfds:{registry.get(config.dataset).tfds_name or 'NAME'} "
                                  "to choose the splits of a tfds dataset")
    mean, std = tuple(config.data_mean), tuple(config.data_std)
    if len(mean) != len(std) or len(mean) not in (0, 1, 3):
        raise ConfigError(f"config.data_mean={mean} and config.data_std={std}: give both, with 1 or 3 values each "
                          "(one per channel), or neither")
    if any(not isinstance(v, (int, float)) for v in mean + std) or any(v <= 0 for v in std):
        raise ConfigError(f"config.data_std={std}: every value must be a number > 0 (0-1 pixel scale)")
    fixed = registry.DATASETS.get(config.dataset)
    if mean and fixed and len(mean) != fixed.info.channels:
        raise ConfigError(f"config.data_mean={mean}: {config.dataset} has {fixed.info.channels} channel(s), so give "
                          f"{fixed.info.channels} values")


def _check_kd(config: Any) -> None:
    _positive("kd.alpha", config.kd.alpha, allow_zero=True)
    _positive("kd.temperature", config.kd.temperature)
    if config.kd.alpha > 0 and not config.kd.teacher:
        raise ConfigError("config.kd.alpha > 0 but config.kd.teacher is empty: give a teacher (a workdir of a "
                          "supervised run, or a .pth/.safetensors file) or set config.kd.alpha=0")


def _check_moco(config: Any) -> None:
    if not config.moco.enabled:
        return
    if not 0.0 <= config.moco.momentum <= 1.0:
        raise ConfigError(f"config.moco.momentum={config.moco.momentum}: must be in [0, 1]")
    queue, batch = config.moco.queue_size, config.batch_size
    if queue <= 0 or queue % batch:
        raise ConfigError(f"config.moco.queue_size={queue} is not a positive multiple of the global batch "
                          f"{batch}; use e.g. {max(1, round(queue / batch)) * batch}")
    keys_per_step = config.num_views * batch
    if queue < keys_per_step:
        raise ConfigError(f"config.moco.queue_size={queue} is smaller than the {keys_per_step} keys enqueued per "
                          f"step (num_views * batch_size); use at least {keys_per_step}")


def _check_knn(config: Any) -> None:
    for name in ("every_steps", "max_train_examples"):
        _positive(f"knn.{name}", config.knn[name], allow_zero=True)
    _positive("knn.k", config.knn.k)
    _positive("knn.temperature", config.knn.temperature)
