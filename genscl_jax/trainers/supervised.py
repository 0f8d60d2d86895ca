"""Supervised cross-entropy training: the CE baseline of the paper's table and the project's way to make teachers.

Same state, loop, checkpoints and logging as pretraining; the network is the encoder with its "fc" classifier,
the targets are Mixup/CutMix label distributions with optional label smoothing. A workdir of this mode is a
valid `config.kd.teacher`. `config.micro_batch_size` runs the network over micro-batches as pretraining does
(training/micro_batches.py; the logits stay whole, BatchNorm per micro-batch), so a teacher trains at the batch
its student uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from genscl_jax import data
from genscl_jax.data import device_preprocess
from genscl_jax.models import model_builder
from genscl_jax.objectives import diagnostics, losses
from genscl_jax.runtime import compile_options, parallel
from genscl_jax.trainers import step_inputs, step_settings
from genscl_jax.trainers.step_settings import from_config
from genscl_jax.training import metrics, optimizers, train_loop
from genscl_jax.training.micro_batches import MicroBatches
from genscl_jax.training.train_state import TrainState, create_train_state


@dataclasses.dataclass(frozen=True)
class SupervisedSettings:
    """What the step needs besides the model and optimizer (static under jit), read from the config where each field
    says (step_settings.read), except the two the trainer gives."""
    num_classes: int
    # What the step does to the batch's uint8 views first (DataSource.training_input).
    preprocessing: device_preprocess.Preprocessing
    mix: step_inputs.MixSettings = from_config(step_inputs.MixSettings.from_config)
    label_smoothing: float = from_config("label_smoothing")
    # > 0: the network runs over strided micro-batches of that many source images, each recomputed in the backward
    # pass (training/micro_batches.py)
    micro_batch_size: int = from_config("micro_batch_size")


def make_supervised_step(model: Any, tx: optax.GradientTransformation, schedule: optax.Schedule,
                         settings: SupervisedSettings, layout: parallel.ExampleLayout = parallel.ONE_DEVICE):
    """step(state, batch) -> (state, metrics). `layout` keeps the images sharded by examples and rolls their
    mixing partners per device (step_inputs.StepInputs.layout; parallel.ExampleLayout(mesh))."""
    s = settings

    def step(state: TrainState, batch: dict[str, jax.Array]):
        key = jax.random.fold_in(state.rng, state.step)
        batch_size, num_views = batch["image"].shape[:2]
        micro = MicroBatches.of(batch_size, s.micro_batch_size, views=num_views)
        inputs, targets = step_inputs.inputs_and_labels(jax.random.fold_in(key, 1), key, batch, s.num_classes,
                                                        preprocessing=s.preprocessing, micro=micro, mix=s.mix,
                                                        layout=layout)
        rows_or_builder = step_inputs.rows_or_builder(inputs)

        def apply(params, rows):
            logits, new_model_state = model.apply({"params": params, "batch_stats": state.batch_stats}, rows,
                                                  train=True, mutable=["batch_stats"])
            return logits, new_model_state

        def loss_fn(params):
            logits, new_model_state = micro.forward_with_recompute(apply, params, rows_or_builder)
            loss = losses.soft_cross_entropy(logits, targets, s.label_smoothing)
            return loss, (new_model_state["batch_stats"], logits)

        (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads, tx, batch_stats=batch_stats)
        # Accuracy against the dominant source label of each (possibly mixed) image.
        accuracy = diagnostics.dominant_class_agreement(logits, targets)
        return new_state, {"loss": loss, "train_accuracy": accuracy, "grad_norm": optimizers.global_norm(grads),
                           "learning_rate": schedule(state.step)}

    return step


def build_trainer(config: Any, mesh: Mesh, source: data.DataSource) -> train_loop.Trainer:
    spec, steps_per_epoch = source.info, source.steps_per_epoch(config.batch_size)
    total_steps = optimizers.total_train_steps(config, steps_per_epoch)
    model = model_builder.build_encoder(config, num_classes=spec.num_classes, training_views=1,
                                         platform=parallel.mesh_platform(mesh))
    tx, schedule = optimizers.optimizer_from_config(config, total_steps, steps_per_epoch)
    sample = jnp.zeros((1, config.image_size, config.image_size, spec.channels), jnp.float32)
    train = source.training_input(mesh, source.views.train, batch_size=config.batch_size, num_views=1)
    state = create_train_state(lambda rng: model.init(rng, sample, train=False), tx, config.seed, mesh)
    settings = step_settings.read(SupervisedSettings, config, num_classes=spec.num_classes,
                                  preprocessing=train.preprocessing)
    step = make_supervised_step(model, tx, schedule, settings, layout=parallel.ExampleLayout(mesh))
    options = compile_options.model_jit_options(config, parallel.mesh_platform(mesh))
    compiled = parallel.jit_train_step(step, mesh, compiler_options=options.get("compiler_options"))
    test_preprocessing = source.eval_preprocessing()
    evaluate = jax.jit(lambda state, images: model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        device_preprocess.normalize(images, test_preprocessing), train=False), **options)

    def test_accuracy(state: TrainState, step: int) -> dict[str, float]:
        del step
        test = source.eval_batches(mesh, batch_size=config.eval_batch_size)
        return metrics.classification_metrics(lambda images: evaluate(state, images), test)

    return train_loop.Trainer(name="supervised", state=state, train_step=compiled, batches=train.batches,
                              total_steps=total_steps, examples_per_step=config.batch_size,
                              periodic_eval=test_accuracy, eval_every_steps=config.eval_every_steps)


def run(config: Any, workdir: str, source: data.DataSource, *, mesh: Mesh | None = None) -> dict[str, Any]:
    """Trains the classifier (resuming from `workdir`) and returns the summary, test top-1/top-5 included."""
    return train_loop.run_and_report(build_trainer(config, mesh or parallel.create_mesh(), source), config, workdir)
