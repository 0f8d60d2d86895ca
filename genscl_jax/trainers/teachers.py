"""Teachers for knowledge distillation: a frozen classifier whose softmax becomes a label distribution.

A teacher is a Flax module plus its variables. It runs inside the train step without gradient, in its own
dtype, and is passed to the step as an argument, never stored in the student's state or checkpoints.
Sources: (a) the workdir of a supervised run of this project, whose architecture (model, width, stem, classes)
comes from the config that run recorded (run_config); (b) a PyTorch torchvision/timm ResNet state_dict in a
.pth/.pt or .safetensors file, converted by torch_conversion (never unpickling code), whose architecture
config.kd.teacher_model / teacher_width_multiplier / teacher_stem describe; (c) any Flax module + variables a
notebook passes in (`Teacher(module, variables)`, e.g. to pretrain.run(..., teacher=...)).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax

from genscl_jax import models
from genscl_jax.models import model_builder, torch_conversion
from genscl_jax.runtime import paths
from genscl_jax.training import checkpointing
from genscl_jax.workdirs import run_config, trained_network


class TeacherError(ValueError):
    """A teacher that cannot be used; the message names the file or layer."""


@dataclasses.dataclass
class Teacher:
    module: nn.Module  # __call__(images, train=False) -> logits [B, num_classes]
    variables: Any  # {"params": ..., "batch_stats": ...}

    def logits(self, variables: Any, images: jax.Array) -> jax.Array:
        return self.module.apply(variables, images, train=False)


def teacher_module(config: Any, num_classes: int, *, torch_weights: bool = False) -> nn.Module:
    """The teacher network config.kd describes (for foreign weights: a workdir records its own architecture),
    computing in config.kd.teacher_dtype."""
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
    path = config.kd.teacher
    if torch_conversion.is_torch_weights_file(path):
        module = teacher_module(config, num_classes, torch_weights=True)
        try:
            state_dict = torch_conversion.load_state_dict(path)
            variables = torch_conversion.convert_resnet(state_dict, module, channels=channels, source=path)
        except torch_conversion.ConversionError as e:
            raise TeacherError(str(e)) from e
        return Teacher(module, variables)
    if paths.is_dir(checkpointing.checkpoint_dir(path)):
        return _teacher_from_workdir(config, path, num_classes, channels)
    raise TeacherError(f"config.kd.teacher={path!r}: neither a .pth/.pt/.safetensors file nor a workdir with "
                       "checkpoints/ from a supervised run (python -m genscl_jax.main --config ... "
                       "--config.mode=supervised --workdir DIR)")


def _teacher_from_workdir(config: Any, workdir: str, num_classes: int, channels: int) -> Teacher:
    """The supervised network `workdir` trained, built from the config it recorded (config.kd.teacher_model and
    friends are for foreign weights and play no part)."""
    recorded = run_config.read(workdir)
    if recorded is None:
        raise TeacherError(f"teacher {workdir}: no {run_config.CONFIG_FILE} or summary.json, so its architecture is "
                           "unknown: rerun its command once with this version (a run records its config when it "
                           "starts; a finished run trains nothing more)")
    if recorded.mode != "supervised":
        raise TeacherError(f"teacher {workdir}: a {recorded.mode} run has no classifier; a teacher is the workdir "
                           "of a supervised run (--config.mode=supervised)")
    variables = _variables_from_workdir(workdir)
    teacher_classes = int(variables["params"]["fc"]["bias"].shape[0])
    if teacher_classes != num_classes:
        raise TeacherError(f"teacher {workdir} predicts {teacher_classes} classes (its dataset "
                           f"{recorded.dataset}), this run's dataset {config.dataset} has {num_classes}: use a "
                           f"teacher trained on {config.dataset}")
    module = models.create_resnet(
        recorded.model, stem=model_builder.resolve_stem(recorded.stem, recorded.image_size),
        width_multiplier=recorded.width_multiplier, num_classes=teacher_classes,
        dtype=model_builder.compute_dtype(config.kd.teacher_dtype))
    check_variables(module, variables, (1, config.image_size, config.image_size, channels), source=workdir)
    return Teacher(module, variables)


def _variables_from_workdir(workdir: str) -> dict:
    checkpointer = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
    if checkpointer.latest_step() is None:
        raise TeacherError(f"teacher {workdir}: no complete checkpoint in {checkpointer.directory} yet: let the "
                           "supervised run checkpoint first")
    restored = checkpointer.restore_subtree(("params", "batch_stats"))
    return {"params": restored["params"], "batch_stats": restored["batch_stats"]}


def check_variables(module: nn.Module, variables: dict, sample_shape: tuple[int, ...], *, source: str) -> None:
    """Compares every variable's shape with what `module` expects; fails on the first mismatch, naming it."""
    problem = trained_network.variables_mismatch(module, variables, sample_shape)
    if problem:
        hint = " (wrong number of classes?)" if "'fc'" in problem else ""
        raise TeacherError(f"teacher {source}: {problem}{hint}")
