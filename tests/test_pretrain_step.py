"""The compiled GenSCL step: what it computes, across key encoder / mixing / teacher / optimizer combinations.

Compiling the step is most of this file's time, so tests that need the same step share one compile and one run
(`stepped`, memoised for the module): the key encoder tests use one MoCo config (MOCO), the mixing ones MIXUP."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genscl_jax.objectives import losses, mixing
from genscl_jax.models import model_builder
from genscl_jax import data
from genscl_jax.data import device_preprocess
from genscl_jax.runtime import parallel
from genscl_jax.trainers import pretrain
from conftest import make_tiny_config
from helpers import run_steps, tiny_teacher

pytestmark = pytest.mark.slow  # trains a run or starts a process

MIXUP = {"mix.kind": "mixup"}
MOCO = {"moco.enabled": True, "moco.queue_size": 32, "moco.momentum": 0.75, **MIXUP}
BLOCKED = {"loss_block_size": 5}  # loss_chunked's anchor blocks; 0 (the default) is the dense loss


class Stepped:
    """Two steps of the tiny config with `overrides`: the trainer, its first batch, the host copies of the state
    before and after each step, and each step's metrics."""

    def __init__(self, overrides, num_steps=2):
        self.config = config = make_tiny_config(**overrides)
        self.source = data.resolve(config)
        self.trainer = pretrain.build_trainer(config, parallel.create_mesh(), self.source)
        batches = self.trainer.batches(0)
        self.first_batch = next(batches)
        state = self.trainer.state
        self.states, self.history = [jax.device_get(state)], []
        for batch in [self.first_batch] + [next(batches) for _ in range(num_steps - 1)]:
            state, metrics = self.trainer.train_step(state, batch)
            self.states.append(jax.device_get(state))
            self.history.append(jax.device_get(metrics))


@pytest.fixture(scope="module")
def stepped():
    """Stepped(overrides), made once per module for each set of overrides."""
    made = functools.lru_cache(maxsize=None)(lambda items: Stepped(dict(items)))
    return lambda **overrides: made(tuple(sorted(overrides.items())))


@pytest.fixture(scope="module")
def moco_with_teacher():
    """Four steps with the key encoder, its queue, mixup + cutmix, LARS and a teacher's labels at kd.alpha 0.5, and
    the teacher's variables as they were before."""
    config = make_tiny_config(optimizer="lars", **{"moco.enabled": True, "moco.queue_size": 48,
                                                    "moco.momentum": 0.9, "mix.kind": "mixup_cutmix",
                                                    "kd.alpha": 0.5, "kd.teacher": "in-memory"})
    teacher = tiny_teacher(config)
    teacher_before = jax.device_get(teacher.variables)
    _, state, history = run_steps(config, 4, teacher=teacher)
    return config, teacher, teacher_before, state, history


def test_loss_falls_on_a_learnable_task():
    config = make_tiny_config(num_train_steps=50, learning_rate=0.1, batch_size=16)
    _, _, history = run_steps(config, 50)
    losses_seen = np.array([h["loss"] for h in history])
    assert np.all(np.isfinite(losses_seen))
    assert losses_seen[-10:].mean() < 0.8 * losses_seen[:5].mean(), losses_seen


def test_step_without_key_encoder_computes_the_paper_loss(stepped):
    """Recompute one step by hand: the uint8 views normalised, same mixing keys, same forward, loss over all 2N
    views."""
    run = stepped(**MIXUP)
    config, source, state0, batch, metrics = run.config, run.source, run.states[0], run.first_batch, run.history[0]
    assert batch["image"].dtype == jnp.uint8

    model = model_builder.build_contrastive_model(config)
    _, mix_key = jax.random.split(jax.random.fold_in(state0.rng, 0))
    images = device_preprocess.normalize(batch["image"], source.eval_preprocessing())
    views, labels = mixing.mix_views(mix_key, images, batch["label"], 10, kind="mixup", alpha=1.0)
    out, _ = model.apply({"params": state0.params, "batch_stats": state0.batch_stats},
                         views.reshape((-1,) + views.shape[2:]), train=True, mutable=["batch_stats"])
    expected = losses.generalized_supcon_loss(out["projection"], labels.reshape(-1, 10))
    np.testing.assert_allclose(float(metrics["loss"]), float(expected), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss_mixed"]), float(expected), rtol=1e-5)


def test_key_encoder_queue_and_teacher_in_one_step(moco_with_teacher):
    config, _, _, state, history = moco_with_teacher
    keys_per_step = 2 * config.batch_size
    # Queue: 48 slots, 16 keys per step; after 4 steps it is full and the pointer wrapped to 64 % 48.
    assert int(state.queue["count"]) == 48 and int(state.queue["pointer"]) == (4 * keys_per_step) % 48
    np.testing.assert_allclose([h["queue_fill"] for h in history], [16 / 48, 32 / 48, 1.0, 1.0], rtol=1e-6)
    # Stored keys are unit vectors and labels are distributions, teacher labels included.
    np.testing.assert_allclose(np.linalg.norm(state.queue["keys"], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(state.queue["labels"].sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(state.queue["teacher_labels"].sum(1), 1.0, rtol=1e-5)
    # The EMA encoder lags the online one (its exact arithmetic is checked in test_ema_follows_the_formula).
    online, ema = (state.params["encoder"]["conv_init"]["kernel"],
                   state.ema["params"]["encoder"]["conv_init"]["kernel"])
    assert not np.allclose(online, ema)
    # Both terms are logged and combined with kd.alpha.
    for h in history:
        np.testing.assert_allclose(h["loss"], h["loss_mixed"] + 0.5 * h["loss_teacher"], rtol=1e-5)


@pytest.mark.parametrize("blocks", [{}, BLOCKED], ids=["dense", "blocked"])
def test_first_moco_step_has_the_in_batch_loss(stepped, blocks):
    """Step 0: EMA keys equal the queries and the queue is empty, so with each anchor's own key excluded the MoCo
    loss is the in-batch loss, dense and blocked."""
    in_batch = stepped(**MIXUP, **blocks).history
    moco = stepped(**MOCO, **blocks).history
    np.testing.assert_allclose(moco[0]["loss"], in_batch[0]["loss"], rtol=1e-5)


def test_ema_follows_the_formula_for_one_step(stepped):
    before, after = stepped(**MOCO).states[:2]  # MOCO's momentum is 0.75
    expected = jax.tree_util.tree_map(lambda e, o: 0.75 * e + 0.25 * o, before.ema["params"], after.params)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           after.ema["params"], expected)


def test_teacher_only_labels_with_cutmix_and_adamw():
    config = make_tiny_config(optimizer="adamw", learning_rate=1e-3,
                              **{"mix.kind": "cutmix", "kd.alpha": float("inf"), "kd.teacher": "in-memory"})
    _, state, history = run_steps(config, 2, teacher=tiny_teacher(config))
    for h in history:
        assert "loss_mixed" not in h
        np.testing.assert_allclose(h["loss"], h["loss_teacher"], rtol=1e-6)
        assert np.isfinite(h["loss"]) and h["grad_norm"] > 0


def test_teacher_never_enters_the_student_state(moco_with_teacher):
    _, teacher, teacher_before, state, _ = moco_with_teacher
    leaves = {np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(jax.device_get(state))}
    assert not any(np.asarray(x).tobytes() in leaves for x in jax.tree_util.tree_leaves(teacher_before)
                   if np.asarray(x).size > 8)
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(teacher.variables), teacher_before)


def test_sgd_nesterov_with_bf16_compute():
    config = make_tiny_config(nesterov=True, dtype="bfloat16")
    _, state, history = run_steps(config, 2)
    assert state.params["encoder"]["conv_init"]["kernel"].dtype == jnp.float32
    assert all(np.isfinite(h["loss"]) for h in history)


def test_blocked_loss_gives_the_same_step(stepped):
    """loss_block_size splits the anchors into blocks (loss_chunked): same loss, same update."""
    dense_run, blocked_run = stepped(**MOCO), stepped(**MOCO, **BLOCKED)
    for a, b in zip(dense_run.history, blocked_run.history):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6),
                           dense_run.states[-1].params, blocked_run.states[-1].params)


def test_mix_prob_reaches_the_compiled_step(stepped):
    """config.mix.prob goes through the settings into the step: with prob 0 a mixup run trains on unmixed views."""
    unmixed = [h["loss"] for h in stepped().history]
    never = [h["loss"] for h in stepped(**MIXUP, **{"mix.prob": 0.0}).history]
    always = [h["loss"] for h in stepped(**MIXUP).history]
    np.testing.assert_array_equal(never, unmixed)
    assert not np.allclose(always, unmixed)
