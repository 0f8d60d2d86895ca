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
from genscl_jax.workdirs import trained_network


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
    if paths.is_dir(path):
        return _teacher_from_workdir(config, path, num_classes, channels)
    raise TeacherError(f"config.kd.teacher={path!r}: neither a .pth/.pt/.safetensors file nor a workdir with "
                       "checkpoints/ from a supervised run (python -m genscl_jax.main --config ... "
                       "--config.mode=supervised --workdir DIR)")


def _teacher_from_workdir(config: Any, workdir: str, num_classes: int, channels: int) -> Teacher:
    """The supervised network `workdir` trained, restored as every reader of a workdir restores it
    (trained_network, with the architecture the run recorded; config.kd.teacher_model and friends are for foreign
    weights and play no part), computing in config.kd.teacher_dtype."""
    try:
        trained = trained_network.load_classifier(workdir)
    except trained_network.EncoderError as e:
        raise TeacherError(f"teacher {e}") from e
    teacher_classes = int(trained.variables["params"]["fc"]["bias"].shape[0])
    if teacher_classes != num_classes:
        raise TeacherError(f"teacher {workdir} predicts {teacher_classes} classes (its dataset "
                           f"{trained.config.dataset}), this run's dataset {config.dataset} has {num_classes}: use a "
                           f"teacher trained on {config.dataset}")
    if trained.input_channels != channels:
        raise TeacherError(f"teacher {workdir} takes {trained.input_channels}-channel images, this run's dataset "
                           f"gives {channels}: set config.channels={trained.input_channels} or use a teacher "
                           f"trained on {config.dataset}")
    module = trained.module.clone(dtype=model_builder.compute_dtype(config.kd.teacher_dtype))
    return Teacher(module, trained.variables)
