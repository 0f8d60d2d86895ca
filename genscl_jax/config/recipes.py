"""What recipe files (configs/*.py) share: their argument parser (`file.py:ARG`), the `runlocal` shrink, the one
tiny config, and how a recipe folder becomes importable."""

from __future__ import annotations

import os
import sys
from typing import Any

import ml_collections


def make_recipe_importable(recipe_path: str) -> None:
    """Puts the parent of a recipe file's folder on sys.path, so the recipes there import their siblings as a
    package (`from configs import cifar10_resnet50`) from any working directory."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(recipe_path.split(":", 1)[0])))
    if root not in sys.path:
        sys.path.insert(0, root)


def parse_arg(arg: str, **spec: Any) -> ml_collections.ConfigDict:
    """A recipe's argument (`--config file.py:ARG`), parsed as big_vision's configs do: "runlocal" or
    "runlocal,key=value" -> ConfigDict. `spec` names every argument the recipe knows with its default, whose type
    parses the value; a bare name sets a boolean. An unknown name or a bad value is a ValueError naming it."""
    parsed = ml_collections.ConfigDict(dict(spec))
    for item in (part.strip() for part in (arg or "").split(",")):
        if not item:
            continue
        name, has_value, text = item.partition("=")
        if name not in spec:
            raise ValueError(f"config argument {name!r} is unknown; this recipe takes: {', '.join(spec)}")
        default = spec[name]
        if not has_value:
            if not isinstance(default, bool):
                raise ValueError(f"config argument {name!r} needs a value: {name}=...")
            parsed[name] = True
        else:
            parsed[name] = _parse_value(name, text, type(default))
    return parsed


def _parse_value(name: str, text: str, kind: type) -> Any:
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"config argument {name}={text!r}: expected true or false")
        return text.lower() in ("true", "1")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"config argument {name}={text!r}: expected {kind.__name__}") from None


def apply_runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """big_vision's `runlocal`: the same recipe, shrunk to run for a minute on a laptop (`--config file.py:runlocal`).

    Everything that is not size (loss, mixing, MoCo, teacher, optimizer) stays as the recipe has it, so the local
    run exercises the same code path as the real one.
    """
    config.model = "resnet18"
    config.width_multiplier = 0.125
    config.image_size = min(config.image_size, 32)
    config.batch_size = 32
    config.num_train_steps = 20
    config.checkpoint_every_steps = 10
    config.log_every_steps = 5
    config.eval_batch_size = 64
    config.dtype = "float32"
    config.head.hidden_dim = 0
    config.moco.queue_size = 4 * config.num_views * config.batch_size
    # A micro-batched recipe stays micro-batched: 4 micro-batches of 8 (on 1 or 8 devices).
    config.micro_batch_size = min(config.micro_batch_size, 8)
    config.bn_group_size = min(config.bn_group_size, 8)
    config.linear_eval.num_epochs = 1
    config.linear_eval.batch_size = 64
    return config
