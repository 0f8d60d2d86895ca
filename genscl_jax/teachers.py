"""Teachers for knowledge distillation: a frozen classifier whose softmax becomes a label distribution.

A teacher is a Flax module plus its variables. It runs inside the train step without gradient, in its own
dtype, and is passed to the step as an argument, never stored in the student's state or checkpoints.
Sources: (a) the workdir of a supervised run of this project; (b) a PyTorch torchvision/timm ResNet state_dict in
a .pth/.pt or .safetensors file, converted by torch_conversion (never unpickling code); (c) any Flax module +
variables a notebook passes in (`Teacher(module, variables)`, e.g. to pretrain.run(..., teacher=...)).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax

from genscl_jax import checkpointing, model_builder, models, paths


class TeacherError(ValueError):
    """A teacher that cannot be used; the message names the file or layer."""


@dataclasses.dataclass
class Teacher:
    module: nn.Module  # __call__(images, train=False) -> logits [B, num_classes]
    variables: Any  # {"params": ..., "batch_stats": ...}

    def logits(self, variables: Any, images: jax.Array) -> jax.Array:
        return self.module.apply(variables, images, train=False)


def teacher_module(config: Any, num_classes: int, *, torch_weights: bool = False) -> nn.Module:
    """The teacher network config.kd describes, computing in config.kd.teacher_dtype."""
    kd = config.kd
    # PyTorch ImageNet ResNets all have the 7x7 stride-2 stem, whatever size the student's images are.
    stem = "imagenet" if torch_weights and kd.teacher_stem == "auto" else model_builder.resolve_stem(
        kd.teacher_stem, config.image_size)
    return models.create_resnet(
        kd.teacher_model, stem=stem,
        width_multiplier=kd.teacher_width_multiplier, num_classes=num_classes,
        dtype=model_builder.compute_dtype(kd.teacher_dtype))


def load_teacher(config: Any, num_classes: int, channels: int) -> Teacher:
    """The teacher config.kd.teacher names: a supervised-run workdir, or a .pth/.pt/.safetensors ResNet file; local
    or a gs:// URL."""
    from genscl_jax import torch_conversion  # it imports this module

    path = config.kd.teacher
    if torch_conversion.is_torch_weights_file(path):
        module = teacher_module(config, num_classes, torch_weights=True)
        state_dict = torch_conversion.load_state_dict(path)
        return Teacher(module, torch_conversion.convert_resnet(state_dict, module, channels=channels, source=path))
    module = teacher_module(config, num_classes)
    sample_shape = (1, config.image_size, config.image_size, channels)
    if paths.is_dir(checkpointing.checkpoint_dir(path)):
        return Teacher(module, _variables_from_workdir(path, module, sample_shape))
    raise TeacherError(f"config.kd.teacher={path!r}: neither a .pth/.pt/.safetensors file nor a workdir with "
                       "checkpoints/ from a supervised run (python -m genscl_jax.main --config ... "
                       "--config.mode=supervised --workdir DIR)")


def _variables_from_workdir(workdir: str, module: nn.Module, sample_shape: tuple[int, ...]) -> dict:
    restored = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True).restore_subtree(
        ("params", "batch_stats"))
    variables = {"params": restored["params"], "batch_stats": restored["batch_stats"]}
    check_variables(module, variables, sample_shape, source=workdir)
    return variables


def check_variables(module: nn.Module, variables: dict, sample_shape: tuple[int, ...], *, source: str) -> None:
    """Compares every variable's shape with what `module` expects; fails on the first mismatch, naming it."""
    expected = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jax.numpy.zeros(sample_shape),
                                                  train=False))
    expected_flat = dict(jax.tree_util.tree_flatten_with_path(dict(expected))[0])
    given_flat = dict(jax.tree_util.tree_flatten_with_path(dict(variables))[0])
    for path, leaf in expected_flat.items():
        name = jax.tree_util.keystr(path)
        if path not in given_flat:
            raise TeacherError(f"teacher {source}: layer {name} is missing")
        shape = tuple(given_flat[path].shape)
        if shape != tuple(leaf.shape):
            hint = " (wrong number of classes?)" if "fc" in name else ""
            raise TeacherError(f"teacher {source}: layer {name} has shape {shape}, the model expects "
                               f"{tuple(leaf.shape)}{hint}")
