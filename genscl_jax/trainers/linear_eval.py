"""Linear evaluation: a linear classifier on the frozen, pooled features of a pretrained encoder.

The paper's recipe is the default: SGD lr 5, momentum 0.9, no weight decay, 100 epochs, 5 warm-up epochs,
lr x0.2 at epochs 60, 75 and 90, crop+flip training views, normalised test images. The encoder's variables
are read from the pretraining workdir and passed to the compiled programs as a replicated argument (the same
programs `python -m genscl_jax.plan` compiles, with their shapes only): they are never updated and never written
into this run's checkpoints. With `precompute_features` (and no training augmentation) the encoder runs
once over the training and test sets and the classifier trains on stored features, far faster on a CPU, and is
evaluated every epoch (without it, ten times per run). The encoder may come from a pretraining run or from a
supervised run (the CE baseline's probe: its network without the classifier). With
`recalibrate_batch_stats` > 0 its BatchNorm running statistics are first recomputed on clean training images
(batch_norm_recalibration), so features of clean images are not normalised with statistics of augmented views.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh

from genscl_jax import data, models
from genscl_jax.data import device_preprocess
from genscl_jax.models import model_builder
from genscl_jax.objectives import losses
from genscl_jax.runtime import compile_options, parallel, preemption
from genscl_jax.trainers import batch_norm_recalibration
from genscl_jax.training import metrics, optimizers, progress, train_loop
from genscl_jax.training.train_state import TrainState, create_train_state, train_state_initializer
from genscl_jax.workdirs import trained_network


def load_frozen_encoder(pretrained_workdir: str) -> trained_network.TrainedNetwork:
    """The encoder of a pretrain, supervised (its network without the "fc" classifier: the CE baseline's linear
    probe) or pretrain_and_eval run, restored as every reader of a workdir restores it (the architecture it
    recorded, its newest checkpoint)."""
    try:
        return trained_network.load_trained(pretrained_workdir)
    except trained_network.EncoderError as e:
        raise trained_network.EncoderError(f"config.linear_eval.pretrained_workdir: {e}") from e


def linear_schedule(config: Any, steps_per_epoch: int) -> optax.Schedule:
    le = config.linear_eval
    peak = le.learning_rate
    warmup = int(round(le.warmup_epochs * steps_per_epoch))
    decays = optax.piecewise_constant_schedule(
        peak, {int(e * steps_per_epoch) - warmup: le.decay_factor for e in le.decay_epochs})
    if not warmup:
        return decays
    return optax.join_schedules([optax.linear_schedule(peak / max(warmup, 1), peak, warmup), decays], [warmup])


class _Evaluator:
    """Test top-1/top-5 of the classifier on frozen features; remembers the best top-1 seen.

    `test_batches()` gives {"image", "label", "mask"} batches whose "image" `inputs_fn` turns into features: test
    images through the frozen encoder, or features stored once (then an evaluation costs only the classifier)."""

    def __init__(self, config, platform, test_batches, inputs_fn, classifier, train_batches=None):
        self.test_batches = test_batches
        self.train_batches = train_batches  # stored training features: the probe's own training top-1 too
        self.best_top1 = 0.0
        self._logits = jax.jit(lambda params, inputs: classifier.apply({"params": params}, inputs_fn(inputs)),
                               **compile_options.model_jit_options(config, platform))

    def __call__(self, state: TrainState, step: int) -> dict[str, float]:
        del step
        accuracy = metrics.classification_metrics(lambda inputs: self._logits(state.params, inputs),
                                                  self.test_batches())
        self.best_top1 = max(self.best_top1, accuracy["test_top1"])
        results = {"linear_eval_top1": accuracy["test_top1"], "linear_eval_top5": accuracy["test_top5"],
                   "linear_eval_best_top1": self.best_top1}
        if self.train_batches:  # how far the test top-1 is below the training one: a memorising encoder shows here
            train = metrics.classification_metrics(lambda inputs: self._logits(state.params, inputs),
                                                   self.train_batches)
            results["linear_eval_train_top1"] = train["test_top1"]
        return results

    def resume(self, saved_metrics: dict) -> None:
        """The best top-1 seen before a preemption still counts after the resume."""
        self.best_top1 = max(self.best_top1, saved_metrics.get("linear_eval_best_top1", 0.0))


def encoder_features(encoder: nn.Module, preprocessing: device_preprocess.Preprocessing) -> Callable:
    """(frozen variables, uint8 evaluation images) -> the frozen encoder's pooled features of the normalised
    images: what the linear evaluation precomputes features with (jitted with model_jit_options)."""
    def features(frozen, images):
        return jax.lax.stop_gradient(
            encoder.apply(frozen, device_preprocess.normalize(images, preprocessing), train=False))

    return features


@dataclasses.dataclass(frozen=True)
class LinearEvalProgram:
    """The classifier's step and what it runs on: what the trainer loops and what the plan compiles. The step takes
    stored features ({"features", "label"}) when precomputing, else one uint8 view per image ({"image", "label"})
    that it finishes and runs through the frozen encoder, whose variables are its third argument."""
    step_fn: Callable  # (state, batch, frozen variables) -> (state, metrics)
    classifier: nn.Module
    mesh: Mesh
    init_state: Callable[[], TrainState]
    state_shapes: Callable[[], Any]
    feature_dim: int
    compiler_options: dict[str, Any] | None

    def jit(self):
        return parallel.jit_train_step(self.step_fn, self.mesh, num_replicated_args=1,
                                       compiler_options=self.compiler_options)


def build_program(config: Any, mesh: Mesh, spec: data.DatasetInfo, encoder: nn.Module, steps_per_epoch: int, *,
                  train_preprocessing: device_preprocess.Preprocessing | None) -> LinearEvalProgram:
    """The classifier, its optimizer, state and step for `encoder`'s features; `train_preprocessing` None: the
    step trains on precomputed features, else on views it finishes with it."""
    le = config.linear_eval
    platform = parallel.mesh_platform(mesh)
    classifier = models.LinearClassifier(num_classes=spec.num_classes)
    sample = jnp.zeros((1, config.image_size, config.image_size, spec.channels), jnp.float32)
    feature_dim = jax.eval_shape(functools.partial(encoder.init_with_output, train=False),
                                 jax.random.PRNGKey(0), sample)[0].shape[-1]
    schedule = linear_schedule(config, steps_per_epoch)
    tx = optax.chain(optax.add_decayed_weights(le.weight_decay), optax.sgd(schedule, momentum=le.momentum))

    def init(rng):
        return classifier.init(rng, jnp.zeros((1, feature_dim), jnp.float32))

    if train_preprocessing is None:
        def step_input(key, batch, frozen):
            del key, frozen
            return batch["features"]
    else:
        def step_input(key, batch, frozen):
            views = device_preprocess.train_views(key, batch["image"], train_preprocessing)[:, 0]
            return jax.lax.stop_gradient(encoder.apply(frozen, views, train=False))

    return LinearEvalProgram(
        step_fn=_make_step(classifier, tx, schedule, step_input, spec.num_classes), classifier=classifier, mesh=mesh,
        init_state=lambda: create_train_state(init, tx, config.seed, mesh),
        state_shapes=lambda: jax.eval_shape(train_state_initializer(init, tx), jax.random.PRNGKey(config.seed)),
        feature_dim=feature_dim,
        compiler_options=compile_options.model_jit_options(config, platform).get("compiler_options"))


def build_trainer(config: Any, mesh: Mesh, source: data.DataSource, encoder_variables: dict,
                  encoder: nn.Module | None = None) -> train_loop.Trainer:
    """The linear classifier's trainer on the frozen `encoder` (default: the one `config` describes) with
    `encoder_variables`, computing in config.dtype."""
    le, spec = config.linear_eval, source.info
    platform = parallel.mesh_platform(mesh)
    encoder = (encoder or model_builder.build_encoder(config)).clone(dtype=model_builder.compute_dtype(config.dtype))
    frozen = parallel.replicate(_recalibrated(config, mesh, source, encoder, encoder_variables), mesh)
    features = encoder_features(encoder, source.eval_preprocessing())
    # The encoder alone, compiled once for every precomputed split.
    encode = functools.partial(jax.jit(features, **compile_options.model_jit_options(config, platform)), frozen)
    batches, train_preprocessing, steps_per_epoch, stored_train = _training_data(config, mesh, source, encode)
    program = build_program(config, mesh, spec, encoder, steps_per_epoch, train_preprocessing=train_preprocessing)
    classifier = program.classifier
    if precomputes(config, source):
        # Stored test features make an evaluation cheap: every epoch, so the best top-1 is the best epoch's.
        stored = _stored_test_features(config, mesh, source, encode)
        evaluator = _Evaluator(config, platform, lambda: stored, lambda x: x, classifier, stored_train)
        eval_every = steps_per_epoch
    else:
        evaluator = _Evaluator(config, platform, lambda: source.eval_batches(mesh, batch_size=config.eval_batch_size),
                               functools.partial(features, frozen), classifier)
        # Ten evaluations over the run (and one at the end): each one runs the encoder over the test set.
        eval_every = max(steps_per_epoch * max(int(le.num_epochs) // 10, 1), 1)
    compiled = program.jit()
    total_steps = max(int(le.num_epochs * steps_per_epoch), 1)
    return train_loop.Trainer(name="linear_eval", state=program.init_state(),
                              train_step=lambda state, batch: compiled(state, batch, frozen), batches=batches,
                              total_steps=total_steps, examples_per_step=le.batch_size,
                              periodic_eval=evaluator, eval_every_steps=eval_every, resume_eval=evaluator.resume,
                              report_every_steps=_report_every_steps(le.num_epochs, steps_per_epoch, total_steps))


def _report_every_steps(num_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    """About ten console lines, each after an evaluation (a new test top-1); a run shorter than an epoch (runlocal's),
    which evaluates only at its end, still shows ten."""
    if total_steps < steps_per_epoch:
        return max(total_steps // 10, 1)
    return steps_per_epoch * max(int(num_epochs) // 10, 1)


def _recalibrated(config: Any, mesh: Mesh, source: data.DataSource, encoder: nn.Module, variables: dict) -> dict:
    """The encoder's variables with its BatchNorm statistics recomputed on linear_eval.recalibrate_batch_stats clean
    training batches (batch_norm_recalibration), or as given when that is 0. The batches are the first of the
    un-augmented training stream, keyed by the seed: a resumed run recomputes the same statistics."""
    num_batches = config.linear_eval.recalibrate_batch_stats
    if not num_batches:
        return variables
    train = source.training_input(mesh, source.views.evaluation, batch_size=config.batch_size, num_views=1)
    # The host sends uint8 pixels of the evaluation view; normalised here as in evaluation.
    clean = (device_preprocess.normalize(batch["image"][:, 0], train.preprocessing)
             for batch in preemption.poll_batches(train.batches(0)))
    logging.info("linear_eval: recomputing the encoder's BatchNorm statistics on %d clean training batches of %d",
                 num_batches, config.batch_size)
    return batch_norm_recalibration.recalibrate_batch_stats(encoder, parallel.replicate(variables, mesh), clean,
                                                            num_batches, mesh)


def _training_data(config: Any, mesh: Mesh, source: data.DataSource, encode):
    """(batches, the preprocessing the step finishes its views with or None, steps per epoch, the stored training
    features as evaluation batches or None): stored features (from `encode`, the jitted encoder of evaluation
    images) when precomputing, else one augmented view per image, which the step finishes on the device
    (device_preprocess.train_views) and runs through the frozen encoder."""
    le = config.linear_eval
    if precomputes(config, source):
        features, labels = _precompute(config, mesh, source, encode)
        steps_per_epoch = max(len(labels) // le.batch_size, 1)
        batches = _feature_batches(features, labels, le.batch_size, config.seed, mesh)
        stored_train = (_stored_batches(features, labels, config.eval_batch_size, mesh)
                        if len(labels) <= TRAIN_TOP1_MAX_EXAMPLES else None)
        return batches, None, steps_per_epoch, stored_train

    train = source.training_input(mesh, source.views.linear_eval, batch_size=le.batch_size, num_views=1)
    return train.batches, train.preprocessing, source.steps_per_epoch(le.batch_size), None


# The probe's training top-1 is measured on stored training features up to this many (a labelled subset, a small
# dataset); beyond, keeping them on the devices too would cost more memory than the number is worth.
TRAIN_TOP1_MAX_EXAMPLES = 100_000


def _stored_batches(features, labels, batch_size: int, mesh: Mesh) -> list[dict[str, jax.Array]]:
    """Stored features and labels as padded evaluation batches {"image": features, "label", "mask"}, on the mesh;
    every process holds all rows and feeds its own share of each batch."""
    share = batch_size // jax.process_count()
    mine = slice(jax.process_index() * share, (jax.process_index() + 1) * share)
    batches = []
    for start in range(0, len(labels), batch_size):
        rows = np.arange(start, start + batch_size)
        valid = rows < len(labels)
        rows = np.where(valid, rows, 0)[mine]
        batches.append(parallel.global_batch_from_local(
            {"image": features[rows], "label": labels[rows], "mask": valid[mine]}, mesh))
    return batches


def precomputes(config: Any, source: data.DataSource) -> bool:
    """Features are computed once when asked and the training views are the same every epoch."""
    return config.linear_eval.precompute_features and not source.views.linear_eval.random


def _stored_test_features(config, mesh, source, encode) -> list[dict[str, jax.Array]]:
    """The test split's evaluation batches with "image" replaced by its frozen features, kept on device."""
    return list(_encoded(config, mesh, source, encode, "test", lambda batch, features: {**batch, "image": features}))


def _make_step(classifier: nn.Module, tx, schedule, step_input, num_classes: int):
    def step(state: TrainState, batch, frozen):
        features = step_input(jax.random.fold_in(state.rng, state.step), batch, frozen)
        targets = jax.nn.one_hot(batch["label"], num_classes)

        def loss_fn(params):
            logits = classifier.apply({"params": params}, features)
            return losses.soft_cross_entropy(logits, targets), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads, tx)
        return new_state, {"loss": loss, "train_accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
                           "grad_norm": optimizers.global_norm(grads), "learning_rate": schedule(state.step)}

    return step


def _precompute(config, mesh, source, encode):
    """Features and labels of every training example (no augmentation), gathered to every process's host."""
    from jax.experimental import multihost_utils

    def gather(batch, encoded):
        # process_allgather is a plain device_get on one process and an all-gather across hosts.
        return multihost_utils.process_allgather((encoded, batch["label"], batch["mask"]), tiled=True)

    features, labels = [], []
    for feats, labs, keep in _encoded(config, mesh, source, encode, "train", gather):
        keep = np.asarray(keep).astype(bool)
        features.append(np.asarray(feats)[keep])
        labels.append(np.asarray(labs)[keep])
    return np.concatenate(features), np.concatenate(labels)


def _encoded(config, mesh, source, encode, split: str, take):
    """take(batch, its features) for each batch of one pass over `split`, with a progress bar (or line) for it."""
    total = source.eval_examples(split)
    throughput = progress.Throughput()
    stage = progress.StageProgress(f"linear_eval features ({split})", total, throughput, unit="images")
    done = 0
    try:
        for batch in source.eval_batches(mesh, batch_size=config.eval_batch_size, split=split):
            taken = take(batch, encode(batch["image"]))
            # Global batch rows, padding included: the last batch's padding is cut off at the split's size.
            done = min(done + batch["label"].shape[0], total)
            throughput.done(batch["label"].shape[0], sync=taken)
            stage.tick(done)
            yield taken
        stage.report(done, {})
    finally:
        stage.close()


def _feature_batches(features, labels, batch_size: int, seed: int, mesh: Mesh):
    """Shuffled batches of stored features, a new permutation per epoch keyed by (seed, epoch).

    Every process holds all features and computes the same permutation, then feeds its own share of each batch.
    """
    steps_per_epoch = max(len(labels) // batch_size, 1)
    share = batch_size // jax.process_count()
    mine = slice(jax.process_index() * share, (jax.process_index() + 1) * share)

    def batches(start_step: int):
        step = start_step
        while True:
            epoch, index = divmod(step, steps_per_epoch)
            order = np.random.default_rng([seed, epoch]).permutation(len(labels))
            rows = order[index * batch_size:(index + 1) * batch_size][mine]
            yield parallel.global_batch_from_local({"features": features[rows], "label": labels[rows]}, mesh)
            step += 1

    return batches


def run(config: Any, workdir: str, source: data.DataSource, *, pretrained_workdir: str,
        mesh: Mesh | None = None) -> dict[str, Any]:
    """Trains and evaluates the linear classifier; the summary holds linear_eval_top1/top5 (fractions)."""
    mesh = mesh or parallel.create_mesh()
    pretrained = load_frozen_encoder(pretrained_workdir)
    trainer = build_trainer(config, mesh, source, pretrained.variables, encoder=pretrained.module)
    return train_loop.run_and_report(trainer, config, workdir)
