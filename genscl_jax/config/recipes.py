"""What recipe files (configs/*.py) share: their argument parser (`file.py:ARG`), the `runlocal` shrink, the one
tiny config, and how a recipe folder becomes importable."""

from __future__ import annotations

import ast
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


def recipe_file_problem(recipe: str) -> str | None:
    """Why `--config recipe` ("path.py" or "path.py:ARG") cannot load, as one line naming the file (and the line of
    a syntax error); None when it can. Read without running the file, before absl imports it."""
    path = recipe.split(":", 1)[0]
    if "://" in path:
        return None  # ml_collections reads URLs itself
    if not os.path.exists(path):
        return f"--config {path}: no such file (the recipes are in configs/, e.g. configs/quickstart.py)"
    if os.path.isdir(path):
        return f"--config {path} is a directory: give a config file, e.g. configs/quickstart.py"
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except SyntaxError as e:
        where = f" ({e.text.strip()})" if e.text and e.text.strip() else ""
        return f"{path}:{e.lineno}: {e.msg}{where}"
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"--config {path} cannot be read: {e}"
    if "get_config" not in _top_level_names(tree):
        return (f"{path} has no get_config(): a config file defines get_config() (or get_config(arg)) returning a "
                "ml_collections.ConfigDict, e.g. configs/quickstart.py")
    return None


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level: functions, assignments and imports."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


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


# The one tiny network: a ResNet-10 at 1/16 width with the CIFAR stem and a 16-8 head, ~20k parameters, whose
# steps compile and run in seconds on a CPU. The tests, the `:tiny` recipe variants and the bench's --quick use it.
TINY_NETWORK = {"model": "resnet10", "width_multiplier": 0.0625, "stem": "cifar", "head.hidden_dim": 16,
                "head.output_dim": 8}


def shrink_to_tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The tiny config: TINY_NETWORK on 8 px synthetic data, batch 8, 4 steps, a checkpoint every 2 steps and
    a log line every step, tiny evaluation batches. Everything else (loss, mixing, MoCo, mode) stays."""
    sizes = {**TINY_NETWORK, "dataset": "synthetic", "image_size": 8, "batch_size": 8, "num_train_steps": 4,
             "checkpoint_every_steps": 2, "log_every_steps": 1, "eval_batch_size": 64, "moco.queue_size": 32,
             "linear_eval.batch_size": 64, "linear_eval.num_epochs": 1}
    return set_keys(config, sizes)


def set_keys(config: ml_collections.ConfigDict, values: dict) -> ml_collections.ConfigDict:
    """Sets dotted keys ("moco.enabled") of a ConfigDict to `values`; returns it."""
    for key, value in values.items():
        *parents, leaf = key.split(".")
        target = config
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


RUNLOCAL_KNN_BANK = 2048
RUNLOCAL_LINEAR_EVAL_EPOCHS = 0.05  # of a 50,000-60,000 image training split: 39-46 steps of 64


def apply_runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """big_vision's `runlocal`: the same recipe, shrunk to run for a minute on a laptop (`--config file.py:runlocal`).

    Everything that is not size (loss, mixing, MoCo, teacher, optimizer) stays as the recipe has it, so the local
    run exercises the same code path as the real one; two things change so it runs offline in about a minute
    anywhere: a dataset that only a download would prepare is replaced by synthetic data, and the linear
    evaluation trains on the step's own batches rather than on precomputed features.
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
    # Watching and linear evaluation shrunk with the rest: a bank of 2,048 training images for the kNN vote, and a
    # linear evaluation of RUNLOCAL_LINEAR_EVAL_EPOCHS (about 40 steps of 64 images on any of the recipes' datasets,
    # a quarter of them warming up) that trains on the step's own batches, because precomputing would first encode
    # the whole training split.
    config.knn.max_train_examples = min(config.knn.max_train_examples or RUNLOCAL_KNN_BANK, RUNLOCAL_KNN_BANK)
    config.linear_eval.num_epochs = RUNLOCAL_LINEAR_EVAL_EPOCHS
    config.linear_eval.warmup_epochs = RUNLOCAL_LINEAR_EVAL_EPOCHS / 4
    config.linear_eval.batch_size = 64
    config.linear_eval.precompute_features = False
    # A recipe's dataset that is not prepared here (and would need a download) is replaced by the synthetic task,
    # with a console line saying so (runner), so every recipe's runlocal runs offline.
    config.synthetic_if_unprepared = True
    return config
