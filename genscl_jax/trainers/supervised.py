"""Supervised cross-entropy training: the CE baseline of the paper's table and the project's way to make teachers.

Same state, loop, checkpoints and logging as pretraining; the network is the encoder with its "fc" classifier,
the targets are Mixup/CutMix label distributions with optional label smoothing. A workdir of this mode is a
valid `config.kd.teacher`. `config.micro_batch_size` runs the network over micro-batches as pretraining does
(training/micro_batches.py; the logits stay whole, BatchNorm per micro-batch), so a teacher trains at the batch
its student uses.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from genscl_jax import data
from genscl_jax.data import device_preprocess
from genscl_jax.models import model_builder
from genscl_jax.objectives import losses
from genscl_jax.runtime import compile_options, parallel
from genscl_jax.trainers import step_inputs
from genscl_jax.training import metrics, optimizers, train_loop
from genscl_jax.training.micro_batches import MicroBatches
from genscl_jax.training.train_state import TrainState, create_train_state


def make_supervised_step(model: Any, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                         num_classes: int, mix_kind: str, mix_alpha: float, label_smoothing: float,
                         preprocessing: device_preprocess.Preprocessing, mix_prob: float = 1.0,
                         micro_batch_size: int = 0):
    """step(state, batch) -> (state, metrics); `preprocessing`: what it does to the batch's uint8 views first
    (DataSource.train_preprocessing); micro_batch_size > 0: the network runs over strided micro-batches of that
    many source images, each recomputed in the backward pass (training/micro_batches.py)."""
    def step(state: TrainState, batch: dict[str, jax.Array]):
        key = jax.random.fold_in(state.rng, state.step)
        batch_size, num_views = batch["image"].shape[:2]
        micro = MicroBatches.of(batch_size, micro_batch_size, views=num_views)
        inputs, targets = step_inputs.prepare(jax.random.fold_in(key, 1), key, batch, num_classes,
                                              preprocessing=preprocessing, micro=micro,
                                              mix=step_inputs.MixSettings(mix_kind, mix_alpha, mix_prob))
        images = step_inputs.network_input(inputs)

        def apply(params, rows):
            logits, new_model_state = model.apply({"params": params, "batch_stats": state.batch_stats}, rows,
                                                  train=True, mutable=["batch_stats"])
            return logits, new_model_state

        def loss_fn(params):
            logits, new_model_state = micro.forward_with_recompute(apply, params, images)
            loss = losses.soft_cross_entropy(logits, targets, label_smoothing)
            return loss, (new_model_state["batch_stats"], logits)

        (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads, tx, batch_stats=batch_stats)
        # Accuracy against the dominant source label of each (possibly mixed) image.
        accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(targets, -1))
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
    state = create_train_state(lambda rng: model.init(rng, sample, train=False), tx, config.seed, mesh)
    step = make_supervised_step(model, tx, schedule, num_classes=spec.num_classes, mix_kind=config.mix.kind,
                                mix_alpha=config.mix.alpha, mix_prob=config.mix.prob,
                                label_smoothing=config.label_smoothing,
                                preprocessing=source.train_preprocessing(config.augment, config.device_color_augment),
                                micro_batch_size=config.micro_batch_size)
    options = compile_options.model_jit_options(config, parallel.mesh_platform(mesh))
    compiled = parallel.jit_train_step(step, mesh, compiler_options=options.get("compiler_options"))
    test_preprocessing = source.eval_preprocessing()
    evaluate = jax.jit(lambda state, images: model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        device_preprocess.normalize(images, test_preprocessing), train=False), **options)

    def batches(start_step: int):
        return source.train_batches(mesh, start_step=start_step, batch_size=config.batch_size,
                                    augment=config.augment, num_views=1,
                                    device_color_augment=config.device_color_augment)

    def test_accuracy(state: TrainState, step: int) -> dict[str, float]:
        del step
        test = source.eval_batches(mesh, batch_size=config.eval_batch_size)
        return metrics.classification_metrics(lambda images: evaluate(state, images), test)

    return train_loop.Trainer(name="supervised", state=state, train_step=compiled, batches=batches,
                              total_steps=total_steps, examples_per_step=config.batch_size,
                              periodic_eval=test_accuracy, eval_every_steps=config.eval_every_steps)


def run(config: Any, workdir: str, source: data.DataSource, *, mesh: Mesh | None = None) -> dict[str, Any]:
    """Trains the classifier (resuming from `workdir`) and returns the summary, test top-1/top-5 included."""
    return train_loop.run_and_report(build_trainer(config, mesh or parallel.create_mesh(), source), config, workdir)
