"""The GenSCL pretraining step: one compiled function from (state, global batch) to (state, metrics).

Inside one step: the device's share of the input pipeline (the uint8 views normalised, after colour augmentation
when it runs on the device), per-view Mixup/CutMix, the teacher's forward on the mixed views (no gradient), the
student's forward on all views, the generalized loss against mixed labels and teacher labels, the optimizer update,
the EMA key-encoder update and the queue update; beside them, what shows whether the run is learning: the GenSCL
diagnostics (objectives/diagnostics.py) and the online linear probe's update on the detached features
(online_probe.py), neither of which reaches the encoder's gradients.

With `micro_batch_size` the three networks (teacher, EMA key encoder, student) run over strided micro-batches
(training/micro_batches.py), the student's recomputed in the backward pass, while the loss still spans the whole
batch (and the queue): the same function as the dense step whose BatchNorm groups are the micro-batches.

No TensorFlow and no config library here (config.features imports nothing): the benchmark imports this module on
machines that have neither.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from genscl_jax.config import features
from genscl_jax.data import device_preprocess
from genscl_jax.objectives import diagnostics, loss_chunked, losses, momentum_encoder
from genscl_jax.runtime.parallel import ONE_DEVICE, ExampleLayout
from genscl_jax.trainers import step_inputs, step_settings
from genscl_jax.trainers.step_settings import from_config
from genscl_jax.trainers.online_probe import OnlineProbe
from genscl_jax.training import optimizers
from genscl_jax.training.micro_batches import MicroBatches, RowsOrBuilder
from genscl_jax.training.train_state import TrainState


@dataclasses.dataclass(frozen=True)
class PretrainSettings:
    """What the step needs to know besides the model and optimizer (all static under jit): each field read from the
    config where it says (step_settings.read), except the three the trainer gives."""
    num_classes: int
    total_steps: int
    # What the step does to the batch's uint8 views first (DataSource.training_input).
    preprocessing: device_preprocess.Preprocessing
    temperature: float = from_config("temperature")
    base_temperature: float = from_config("base_temperature")
    loss_normalization: str = from_config("loss_normalization")
    # > 0: the loss in blocks of anchor rows (loss_chunked), for very large contrast sets
    loss_block_size: int = from_config("loss_block_size")
    mix: step_inputs.MixSettings = from_config(step_inputs.MixSettings.from_config)
    distillation: bool = from_config(features.distillation)  # a teacher's labels in the loss
    kd_alpha: float = from_config("kd.alpha", float)  # the teacher term's weight; inf: teacher labels only
    kd_temperature: float = from_config("kd.temperature")
    moco: bool = from_config(features.moco)
    ema_momentum: float = from_config("moco.momentum")
    ema_momentum_cosine: bool = from_config("moco.momentum_cosine")
    # > 0: source images per micro-batch, over the global batch (0: the dense step)
    micro_batch_size: int = from_config("micro_batch_size")
    diagnostics: bool = from_config("diagnostics")  # the GenSCL diagnostics among the step's metrics

    @property
    def uses_mixed_labels(self) -> bool:
        return not math.isinf(self.kd_alpha)


def settings_from_config(config: Any, num_classes: int, total_steps: int,
                         preprocessing: device_preprocess.Preprocessing) -> PretrainSettings:
    return step_settings.read(PretrainSettings, config, num_classes=num_classes, total_steps=total_steps,
                              preprocessing=preprocessing)


TeacherFn = Callable[[Any, jax.Array], jax.Array]  # (teacher_variables, images) -> logits


def make_pretrain_step(model: Any, tx: optax.GradientTransformation, schedule: optax.Schedule,
                       settings: PretrainSettings, teacher_fn: TeacherFn | None = None,
                       replicate: Callable[[Any], Any] = lambda tree: tree, probe: OnlineProbe | None = None,
                       layout: ExampleLayout = ONE_DEVICE):
    """Returns step(state, batch, teacher_variables) -> (state, metrics); jit it with the shardings you want.

    With `probe`, state.probe is its state (train_state_initializer's make_probe) and the step trains it.

    `replicate` lays a pytree out whole on every device inside the step (parallel.replicated_constraint(mesh)).
    The MoCo contrast set goes through it: anchors stay sharded, each device scores its rows against all contrasts.
    Left to itself, XLA shards the [keys; queue] set by rows and gathers it back, label matrix included: at the
    ImageNet recipe that was 5x the gradient all-reduce per device per step (BENCHMARKS.md, "Collective audit").
    `layout` keeps the images sharded by examples and rolls their mixing partners per device
    (step_inputs.StepInputs.layout; parallel.ExampleLayout(mesh)).
    """
    if settings.distillation and teacher_fn is None:
        raise ValueError("kd_alpha > 0 needs a teacher_fn")
    s = settings

    def step(state: TrainState, batch: dict[str, jax.Array], teacher_variables: Any = None):
        batch_size, num_views = batch["image"].shape[:2]
        micro = MicroBatches.of(batch_size, s.micro_batch_size, views=num_views)
        rows_or_builder, labels = network_inputs_and_labels(state, batch, teacher_variables, micro)
        contrasts = _key_contrasts(model, state, rows_or_builder, labels, replicate, micro) if s.moco else None

        def loss_fn(params):
            encoded, batch_stats = _encode(model, params, state.batch_stats, rows_or_builder, micro)
            terms = _loss_terms(encoded["projection"], labels, contrasts, s)
            return _combine(terms, s), (batch_stats, terms, encoded)

        # `encoded`: the whole batch's pooled features [2N, F] and projections [2N, D], in batch order, from the
        # dense and the micro-batched encoder pass alike.
        (loss, (batch_stats, terms, encoded)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads, tx, batch_stats=batch_stats)
        metrics = {"loss": loss, "grad_norm": optimizers.global_norm(grads), "learning_rate": schedule(state.step),
                   **{f"loss_{name}": value for name, value in terms.items()}}
        if s.moco:
            new_state, queue_metrics = _update_key_encoder(new_state, contrasts, labels, s)
            metrics.update(queue_metrics)
        if s.diagnostics:
            metrics.update(_diagnostics(encoded["projection"], labels, contrasts, new_state.queue, num_views, s))
        if probe is not None:
            probe_state, probe_metrics = probe.update(state.probe, encoded["features"], labels["mixed"])
            new_state = new_state.replace(probe=probe_state)
            metrics.update(probe_metrics)
        return new_state, metrics

    def network_inputs_and_labels(state: TrainState, batch: dict[str, jax.Array], teacher_variables: Any,
                                  micro: MicroBatches):
        """The networks' input (step_inputs.rows_or_builder: the whole batch's rows [B * V, H, W, C], batch-major,
        or a builder of micro-batch k's rows) and the rows' label distributions."""
        aug_key, mix_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
        inputs, mixed_labels = step_inputs.inputs_and_labels(
            aug_key, mix_key, batch, s.num_classes, preprocessing=s.preprocessing, micro=micro, mix=s.mix,
            layout=layout)
        rows_or_builder = step_inputs.rows_or_builder(inputs)
        labels = {"mixed": mixed_labels}
        if s.distillation:
            logits = micro.map(lambda rows: teacher_fn(teacher_variables, rows), rows_or_builder)
            logits = jax.lax.stop_gradient(logits).astype(jnp.float32)
            labels["teacher"] = jax.nn.softmax(logits / s.kd_temperature, axis=-1)
        return rows_or_builder, labels

    return step


def _encode(model, params, batch_stats, rows_or_builder: RowsOrBuilder, micro: MicroBatches):
    """The student's train-mode forward: ({"features", "projection"} of every row, updated BatchNorm statistics)."""
    def apply(params, rows):
        outputs, new_model_state = model.apply(
            {"params": params, "batch_stats": batch_stats}, rows, train=True, mutable=["batch_stats"])
        return outputs, new_model_state["batch_stats"]

    return micro.forward_with_recompute(apply, params, rows_or_builder)


def _key_contrasts(model, state: TrainState, rows_or_builder: RowsOrBuilder, labels, replicate,
                   micro: MicroBatches) -> dict[str, jax.Array]:
    """The EMA encoder's keys of this batch's views, followed by the queue, with their labels and a mask.

    Key i is the key of anchor i's own view: the loss excludes it (exclude_self), as SupCon excludes the anchor
    itself, because at step 0 it equals the query. The other view's key of the same image stays: MoCo's positive.
    """
    def project(rows):
        # Train-mode BatchNorm as in MoCo: the key encoder normalises with this batch's (micro-batch's) statistics.
        outputs, _ = model.apply(state.ema, rows, train=True, mutable=["batch_stats"])
        return outputs["projection"]

    keys = jax.lax.stop_gradient(micro.map(project, rows_or_builder)).astype(jnp.float32)
    # The batch's keys and labels are gathered whole before they meet the (replicated) queue, so the contrast set
    # is built replicated; otherwise XLA builds it sharded by classes and gathers all [M, C] labels back.
    batch_keys, batch_labels = replicate((keys, labels))
    queue = state.queue
    contrasts = {
        "batch_keys": keys,
        "features": jnp.concatenate([batch_keys, queue["keys"]]),
        "mask": jnp.concatenate([jnp.ones(keys.shape[0], bool), momentum_encoder.filled_mask(queue)]),
    }
    for source in labels:  # "mixed", and "teacher" with distillation: the batch's, then the queue's
        stored = queue[momentum_encoder.QUEUE_FIELDS[source]]
        contrasts[source] = jnp.concatenate([batch_labels[source], stored])
    return replicate(contrasts)


def _loss_terms(projection, labels, contrasts, s: PretrainSettings) -> dict[str, jax.Array]:
    """One GenSCL term per label source: "mixed" (ground truth after mixing) and "teacher" (distillation)."""
    terms = {}
    loss_fn = losses.generalized_supcon_loss
    if s.loss_block_size:
        loss_fn = functools.partial(loss_chunked.generalized_supcon_loss_chunked, block_size=s.loss_block_size)
    for name in _label_sources(s):
        terms[name] = loss_fn(
            projection, labels[name], temperature=s.temperature, base_temperature=s.base_temperature,
            normalization=s.loss_normalization, **_contrast_kwargs(contrasts, name))
    return terms


def _label_sources(s: PretrainSettings) -> list[str]:
    return (["mixed"] if s.uses_mixed_labels else []) + (["teacher"] if s.distillation else [])


def _contrast_kwargs(contrasts, name: str) -> dict[str, Any]:
    """The loss's contrast-set arguments for label source `name`: none (all-vs-all) without MoCo."""
    if contrasts is None:
        return {}
    return dict(contrast_features=contrasts["features"], contrast_labels=contrasts[name],
                contrast_mask=contrasts["mask"], exclude_self=True)


def _diagnostics(projection, labels, contrasts, queue, num_views: int, s: PretrainSettings) -> dict[str, jax.Array]:
    """objectives/diagnostics.py's scalars: per label source over the loss's contrast set ("_teacher" suffix for the
    teacher's labels), of the projections, of the key queue with MoCo and of the teacher with distillation."""
    projection = jax.lax.stop_gradient(projection)
    metrics = diagnostics.alignment_uniformity(projection, num_views)
    for name in _label_sources(s):
        suffix = "" if name == "mixed" else f"_{name}"
        values = diagnostics.contrast_diagnostics(projection, labels[name], temperature=s.temperature,
                                                  **_contrast_kwargs(contrasts, name))
        metrics.update({f"{key}{suffix}": value for key, value in values.items()})
    if s.moco:
        metrics["key_age"] = diagnostics.queue_key_age(queue, keys_per_step=projection.shape[0])
    if s.distillation:
        metrics["teacher_agreement"] = diagnostics.teacher_agreement(labels["teacher"], labels["mixed"])
    return metrics


def _combine(terms: dict[str, jax.Array], s: PretrainSettings) -> jax.Array:
    """L = L_gen(z; y_mix) + alpha_kd * L_gen(z; p_teacher); alpha_kd = inf keeps the teacher term only."""
    if not s.uses_mixed_labels:
        return terms["teacher"]
    total = terms["mixed"]
    if s.distillation:
        total = total + s.kd_alpha * terms["teacher"]
    return total


def _update_key_encoder(state: TrainState, contrasts, labels, s: PretrainSettings):
    momentum = momentum_encoder.ema_momentum(state.step - 1, s.total_steps, s.ema_momentum, s.ema_momentum_cosine)
    online = {"params": state.params, "batch_stats": state.batch_stats}
    ema = momentum_encoder.ema_update(state.ema, online, momentum)
    entries = {"keys": contrasts["batch_keys"],
               **{momentum_encoder.QUEUE_FIELDS[source]: value for source, value in labels.items()}}
    queue = momentum_encoder.enqueue(state.queue, entries)
    fill = queue["count"] / queue["keys"].shape[0]
    return state.replace(ema=ema, queue=queue), {"queue_fill": fill, "ema_momentum": momentum}
