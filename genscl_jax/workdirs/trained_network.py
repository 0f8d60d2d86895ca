"""The one restore of a trained network out of a run's workdir, built from the architecture the run recorded
(run_config). Everything that reads another run's workdir goes through it, with one set of errors: load_encoder,
export, linear evaluation (`pretrained_workdir`) and teachers (`kd.teacher`).

`load_encoder(workdir)` gives the ResNet encoder (encoder.Encoder: a Flax module that returns pooled features, its
{"params", "batch_stats"}, the input contract the run recorded and `features(images)` from pixels): from a
pretrain run (the encoder subtree of the contrastive model, the query encoder, not the MoCo EMA copy), a
supervised run (the ResNet without its "fc") or a pretrain_and_eval run (its pretrain/ checkpoints; its pretrain/
folder itself is accepted too). `load_trained` also gives the head; `load_classifier` a supervised run's whole
network, fc included (a teacher).

Reading never falls back to an older checkpoint on its own: a damaged newest checkpoint is an error naming it
(the training run's own rerun sets it aside); `step=` reads an older one on purpose.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from genscl_jax.models import model_builder
from genscl_jax.runtime import paths
from genscl_jax.training import checkpointing
from genscl_jax.workdirs import encoder, input_contract, run_config

MODES = ("pretrain", "supervised", "pretrain_and_eval")  # the modes whose checkpoints hold an encoder
_WHICH_WORKDIR = "give the workdir of a pretrain, supervised or pretrain_and_eval run"


class EncoderError(ValueError):
    """A workdir that holds no usable trained network; the one-line message names the path and the fix."""


@dataclasses.dataclass(frozen=True)
class TrainedNetwork:
    module: nn.Module  # computes in float32; module.clone(dtype=jnp.bfloat16) for bfloat16
    variables: dict[str, Any]  # {"params", "batch_stats"} as NumPy arrays
    config: ml_collections.ConfigDict  # the run's recorded config
    step: int  # the checkpoint's training step
    contract: input_contract.InputContract | None = None  # None: a workdir from before contracts were recorded

    @property
    def input_channels(self) -> int:
        """The channel count of the images the network was trained on (its stem's input)."""
        params = self.variables["params"]
        return int(params.get("encoder", params)["conv_init"]["kernel"].shape[2])


def load_encoder(workdir: str, *, step: int | None = None) -> encoder.Encoder:
    """The trained encoder in `workdir` (local or gs://): `.features(images)` gives pooled features [B, F] of uint8
    (or [0, 1] float) NHWC pixels, normalised as in training with `.contract`; `module, variables = load_encoder(..)`
    gives a models.ResNet with num_classes=None, whose `module.apply(variables, x, train=False)` takes images
    already normalised. `step`: that checkpoint instead of the newest."""
    trained = load_trained(workdir, step=step)
    return encoder.Encoder(trained.module, trained.variables, trained.contract, workdir, trained.step)


def load_trained(workdir: str, *, with_head: bool = False, step: int | None = None) -> TrainedNetwork:
    """The encoder (or with_head: the whole network: encoder + projection head, or the classifier with its fc)."""
    config, owner, record_dir = _locate(workdir)
    return _restore(workdir, config, owner, with_head, step, input_contract.read(record_dir))


def load_classifier(workdir: str, *, step: int | None = None) -> TrainedNetwork:
    """A supervised run's whole network, fc included (what a teacher is)."""
    config, owner, record_dir = _locate(workdir)
    if config.mode != "supervised":
        raise EncoderError(f"{workdir}: a {config.mode} run has no classifier; a teacher is the workdir of a "
                           "supervised run (--config.mode=supervised)")
    return _restore(workdir, config, owner, True, step, input_contract.read(record_dir))


def recorded_config(workdir: str) -> ml_collections.ConfigDict:
    """The config `workdir`'s run recorded; EncoderError if it is not a genscl_jax workdir of an encoder."""
    return _locate(workdir)[0]


def _locate(workdir: str) -> tuple[ml_collections.ConfigDict, str, str]:
    """(recorded config, the directory whose checkpoints/ hold the network, the directory of the run's records:
    config.json, input_contract.json); EncoderError naming what is wrong."""
    if not paths.is_dir(workdir):
        raise EncoderError(f"{workdir}: no such directory: {_WHICH_WORKDIR}")
    config = run_config.read(workdir)
    if config is None:
        parent = _parent_of_pretrain_stage(workdir)
        if parent is not None:
            return parent, workdir, os.fspath(workdir).rstrip("/").rsplit("/", 1)[0]
        raise EncoderError(f"{workdir}: not a genscl_jax workdir (no {run_config.CONFIG_FILE} or summary.json), so "
                           f"its architecture is unknown: {_WHICH_WORKDIR}; a run from before config.json records "
                           "it when its command is rerun once (a finished run trains nothing more)")
    if config.mode == "linear_eval":
        raise EncoderError(f"{workdir}: a linear_eval run holds only its linear classifier: use its "
                           f"config.linear_eval.pretrained_workdir ({config.linear_eval.pretrained_workdir}), "
                           "where the encoder was trained")
    if config.mode not in MODES:
        raise EncoderError(f"{workdir}: config.mode={config.mode!r} trains no encoder: {_WHICH_WORKDIR}")
    # pretrain_and_eval pretrains in <workdir>/pretrain.
    return config, paths.join(workdir, "pretrain") if config.mode == "pretrain_and_eval" else workdir, workdir


def _parent_of_pretrain_stage(workdir: str) -> ml_collections.ConfigDict | None:
    """The recorded config of the pretrain_and_eval run whose pretrain/ stage `workdir` is, else None."""
    trimmed = os.fspath(workdir).rstrip("/")
    if trimmed.rsplit("/", 1)[-1] != "pretrain" or "/" not in trimmed:
        return None
    parent = run_config.read(trimmed.rsplit("/", 1)[0])
    return parent if parent is not None and parent.mode == "pretrain_and_eval" else None


def _restore(workdir: str, config: ml_collections.ConfigDict, owner: str, with_head: bool,
             step: int | None, contract: input_contract.InputContract | None) -> TrainedNetwork:
    checkpoints = checkpointing.checkpoint_dir(owner)
    checkpointer = checkpointing.Checkpointer(checkpoints, read_only=True)
    try:
        steps = checkpointer.steps()
        if not steps:
            raise EncoderError(f"{workdir}: no complete checkpoint in {checkpoints}: train first (a run "
                               "checkpoints every config.checkpoint_every_steps steps and when it ends)")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise EncoderError(f"{workdir}: no checkpoint {step} in {checkpoints}; its checkpoints: "
                               f"{', '.join(map(str, steps))}")
        try:
            restored = checkpointer.restore_subtree(("params", "batch_stats"), step)
        except checkpointing.DamagedCheckpoint as e:
            older = [s for s in steps if s < step]
            hint = f"; step={older[-1]} reads the older checkpoint {older[-1]}" if older else ""
            raise EncoderError(f"{workdir}: {e}: rerun the command that trained it (it sets a damaged checkpoint "
                               f"aside and resumes from the newest that restores){hint}") from e
    finally:
        checkpointer.close()
    variables = jax.tree_util.tree_map(np.asarray, {"params": restored["params"],
                                                    "batch_stats": restored["batch_stats"]})
    module, variables = _network(config, variables, with_head)
    _check_shapes(module, variables, config.image_size, workdir)
    return TrainedNetwork(module, variables, config, int(step), contract)


def encoder_variables(variables: dict[str, Any]) -> dict[str, Any]:
    """The encoder's {"params", "batch_stats"} out of a run's variables: a pretrain run's "encoder" subtree of the
    contrastive model, or a supervised run's network without its "fc" classifier."""
    params, batch_stats = variables["params"], variables["batch_stats"]
    if "encoder" in params:
        return {"params": params["encoder"], "batch_stats": batch_stats["encoder"]}
    return {"params": {k: v for k, v in params.items() if k != "fc"}, "batch_stats": batch_stats}


def _network(config: ml_collections.ConfigDict, variables: dict, with_head: bool) -> tuple[nn.Module, dict]:
    """The float32 module the run trained (or its encoder alone) and the matching part of its variables."""
    float32 = ml_collections.ConfigDict(config.to_dict())
    float32.dtype = "float32"  # export and features elsewhere: the parameters are float32 whatever the run computed in
    if not with_head:
        return model_builder.build_encoder(float32), encoder_variables(variables)
    if config.mode == "supervised":
        num_classes = int(variables["params"]["fc"]["bias"].shape[0])
        return model_builder.build_encoder(float32, num_classes=num_classes), variables
    return model_builder.build_contrastive_model(float32), variables


def _check_shapes(module: nn.Module, variables: dict, image_size: int, workdir: str) -> None:
    """The recorded config and the checkpoint must describe the same network; names the first difference."""
    stem_kernel = variables["params"].get("encoder", variables["params"])["conv_init"]["kernel"]
    sample_shape = (1, image_size, image_size, stem_kernel.shape[2])
    problem = _variables_mismatch(module, variables, sample_shape)
    if problem:
        hint = " (wrong number of classes?)" if "'fc'" in problem else ""
        raise EncoderError(f"{workdir}: the checkpoint does not match the recorded config "
                           f"({run_config.CONFIG_FILE}): {problem}{hint}")


def _variables_mismatch(module: nn.Module, variables: dict, sample_shape: tuple[int, ...]) -> str | None:
    """The first variable `module` expects (for inputs of `sample_shape`) that is missing or shaped differently in
    `variables`, as "layer ... is missing" / "layer ... has shape ..., the model expects ..."; None if all fit."""
    expected = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jax.numpy.zeros(sample_shape),
                                                  train=False))
    given = dict(jax.tree_util.tree_flatten_with_path(dict(variables))[0])
    for path, leaf in jax.tree_util.tree_flatten_with_path(dict(expected))[0]:
        name = jax.tree_util.keystr(path)
        if path not in given:
            return f"layer {name} is missing"
        if tuple(given[path].shape) != tuple(leaf.shape):
            return f"layer {name} has shape {tuple(given[path].shape)}, the model expects {tuple(leaf.shape)}"
    return None
