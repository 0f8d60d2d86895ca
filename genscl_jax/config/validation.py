"""Checks a run's config before anything is compiled or read, so a typo costs a second, not a compile.

Every failure is one `ConfigError` line that names the key, what it got and what is allowed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from genscl_jax import models
from genscl_jax.config import defaults, features
from genscl_jax.config.keys import ConfigError as ConfigError  # what every check raises (config/keys.py)
from genscl_jax.config.keys import flatten, unknown_key_error
from genscl_jax.data import registry, views
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
    "augment": views.POLICIES,
    "linear_eval.augment": views.POLICIES,
    "loss_normalization": losses.NORMALIZATIONS,
    "cpu_convolutions": compile_options.CPU_CONVOLUTIONS,
    "kd.teacher_model": models.MODEL_NAMES,
    "kd.teacher_stem": model_builder.STEMS,
    "kd.teacher_dtype": model_builder.DTYPES,
    "online_probe.optimizer": optimizers.OPTIMIZERS,
    "remat": models.REMAT,
}
# Values accepted besides the listed ones, and how the error message names them.
_OPEN_CHOICES = {"dataset": (registry.is_tfds_name, "tfds:NAME (any tfds dataset)")}




@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric key may take: low and high bounds (None: unbounded), each inclusive or not."""
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def contains(self, value: float) -> bool:
        if value != value:  # NaN is in no range
            return False
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        return self.high is None or value < self.high or (value == self.high and self.high_inclusive)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>=' if self.low_inclusive else '>'} {self.low}"
        return f"in {'[' if self.low_inclusive else '('}{self.low}, {self.high}{']' if self.high_inclusive else ')'}"


POSITIVE, NON_NEGATIVE = Range(0, low_inclusive=False), Range(0)
FRACTION, BELOW_ONE = Range(0, 1), Range(0, 1, high_inclusive=False)
# Every numeric key and the values it may take (tests/test_bad_inputs.py walks them all, and checks that no numeric
# key of defaults.base_config() is missing here).
RANGES = {
    "image_size": POSITIVE, "channels": NON_NEGATIVE, "num_views": POSITIVE,
    "train_subset": NON_NEGATIVE, "train_subset_seed": NON_NEGATIVE,
    "width_multiplier": POSITIVE, "head.hidden_dim": NON_NEGATIVE, "head.output_dim": POSITIVE,
    "batch_size": POSITIVE, "num_epochs": NON_NEGATIVE, "num_train_steps": NON_NEGATIVE,
    "learning_rate": POSITIVE, "momentum": BELOW_ONE, "weight_decay": NON_NEGATIVE, "warmup_epochs": NON_NEGATIVE,
    "warmup_start_lr": NON_NEGATIVE, "min_lr_factor": FRACTION, "grad_clip_norm": NON_NEGATIVE,
    "temperature": POSITIVE, "base_temperature": POSITIVE, "loss_block_size": NON_NEGATIVE,
    "micro_batch_size": NON_NEGATIVE, "bn_group_size": NON_NEGATIVE,
    "mix.alpha": POSITIVE, "mix.prob": FRACTION,
    "kd.alpha": NON_NEGATIVE, "kd.temperature": POSITIVE, "kd.teacher_width_multiplier": POSITIVE,
    "moco.queue_size": POSITIVE, "moco.momentum": FRACTION,
    "linear_eval.batch_size": POSITIVE, "linear_eval.num_epochs": POSITIVE, "linear_eval.learning_rate": POSITIVE,
    "linear_eval.momentum": BELOW_ONE, "linear_eval.weight_decay": NON_NEGATIVE,
    "linear_eval.warmup_epochs": NON_NEGATIVE, "linear_eval.decay_factor": Range(0, 1, low_inclusive=False),
    "linear_eval.recalibrate_batch_stats": NON_NEGATIVE,
    "online_probe.learning_rate": POSITIVE, "online_probe.momentum": BELOW_ONE,
    "online_probe.weight_decay": NON_NEGATIVE,
    "knn.k": POSITIVE, "knn.temperature": POSITIVE,
    "knn.max_train_examples": NON_NEGATIVE,
    "label_smoothing": BELOW_ONE,
    "color_jitter_prob": FRACTION, "grayscale_prob": FRACTION,
    "seed": NON_NEGATIVE,  # numpy's generators, which shuffle stored features, take no negative seed
    "checkpoint_every_steps": POSITIVE, "preemption_check_every_steps": POSITIVE, "keep_checkpoints": POSITIVE,
    "log_every_steps": POSITIVE, "eval_batch_size": POSITIVE, "eval_every_steps": NON_NEGATIVE,
}


def _check_keys_and_types(config: Any) -> None:
    known = flatten(defaults.base_config())
    given = flatten(config)
    for name, value in given.items():
        if name not in known:  # the error's hints rebuild the defaults: only for a key that is not one
            raise unknown_key_error(name)
        expected = type(known[name])
        ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
        if not ok or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"config.{name}={value!r}: expected {expected.__name__}, got {type(value).__name__}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    accepts, described = _OPEN_CHOICES.get(name, (lambda value: False, ""))
    if value not in allowed and not accepts(value):
        names = allowed + (described,) if described else allowed
        raise ConfigError(f"config.{name}={value!r}: unknown value; allowed: {', '.join(names)}")


def _check_ranges(flat: dict[str, Any]) -> None:
    for name, allowed in RANGES.items():
        value = flat[name]
        if not allowed.contains(value):
            raise ConfigError(f"config.{name}={value!r}: must be {allowed}")


def validate(config: Any, num_devices: int, num_processes: int = 1) -> None:
    """Raises ConfigError on the first problem found. Reads nothing and compiles nothing."""
    if not hasattr(config, "items"):
        raise ConfigError(f"the config file's get_config() returned {type(config).__name__}, not a "
                          "ml_collections.ConfigDict: start from genscl_jax.config.defaults.base_config()")
    _check_keys_and_types(config)
    flat = flatten(config)
    for name, allowed in CHOICES.items():
        _choice(name, flat[name], allowed)
    _check_ranges(flat)
    _check_decay_epochs(config.linear_eval.decay_epochs)
    _check_views(config)
    if config.num_train_steps == 0 and config.num_epochs == 0:
        raise ConfigError("config.num_train_steps and config.num_epochs are both 0: set one of them")
    _check_batch(config, num_devices, num_processes)
    _check_micro_batches(config, num_devices)
    _check_data(config)
    _check_kd(config)
    _check_moco(config)
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


def _check_decay_epochs(epochs: tuple) -> None:
    if any(isinstance(e, bool) or not isinstance(e, (int, float)) or e < 0 for e in epochs):
        raise ConfigError(f"config.linear_eval.decay_epochs={tuple(epochs)}: give epoch numbers >= 0, e.g. "
                          "(60, 75, 90)")


def _numbers(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v for v in values)


def _check_views(config: Any) -> None:
    """The view plan's tuples (data/views.py): crop area ranges and colour jitter strengths."""
    for key in ("crop_scale", "linear_eval.crop_scale"):
        scale = tuple(config.linear_eval.crop_scale if key.startswith("linear_eval") else config.crop_scale)
        if len(scale) != 2 or not _numbers(scale) or not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError(f"config.{key}={scale}: give (low, high) area fractions with 0 < low <= high <= 1, "
                              "e.g. (0.2, 1.0)")
    jitter = tuple(config.color_jitter)
    if len(jitter) != 4 or not _numbers(jitter) or min(jitter) < 0 or jitter[3] > 0.5:
        raise ConfigError(f"config.color_jitter={jitter}: give (brightness, contrast, saturation, hue) strengths "
                          ">= 0 with hue <= 0.5, e.g. (0.4, 0.4, 0.4, 0.1)")


def _check_kd(config: Any) -> None:
    if features.distillation(config) and not config.kd.teacher:
        raise ConfigError("config.kd.alpha > 0 but config.kd.teacher is empty: give a teacher (a workdir of a "
                          "supervised run, or a .pth/.safetensors file) or set config.kd.alpha=0")


def _check_moco(config: Any) -> None:
    if not features.moco(config):
        return
    queue, batch = config.moco.queue_size, config.batch_size
    if queue % batch:
        raise ConfigError(f"config.moco.queue_size={queue} is not a positive multiple of the global batch "
                          f"{batch}; use e.g. {max(1, round(queue / batch)) * batch}")
    keys_per_step = config.num_views * batch
    if queue < keys_per_step:
        raise ConfigError(f"config.moco.queue_size={queue} is smaller than the {keys_per_step} keys enqueued per "
                          f"step (num_views * batch_size); use at least {keys_per_step}")


