"""The online linear probe and the step's diagnostics: the probe learns, never touches the encoder's update, resumes
with the state; the diagnostics are among the step's metrics with the key queue and a teacher."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import make_tiny_config
from helpers import assert_trees_equal, run_steps, tiny_teacher

from genscl_jax import data, runner
from genscl_jax.runtime import parallel
from genscl_jax.trainers import online_probe, pretrain
from genscl_jax.training import checkpointing, train_loop


def test_the_probe_learns_separable_features_in_a_few_steps():
    rng = np.random.default_rng(0)
    centres = 3 * rng.normal(size=(10, 16))
    classes = rng.integers(0, 10, 512)
    features = jnp.asarray(centres[classes] + rng.normal(size=(512, 16)), jnp.float32)
    targets = jax.nn.one_hot(classes, 10)
    probe = online_probe.OnlineProbe(num_classes=10, feature_dim=16, tx=optax.adamw(1e-2))
    state = probe.init(jax.random.PRNGKey(0))
    update = jax.jit(probe.update)
    tops = []
    for _ in range(20):
        state, step_metrics = update(state, features, targets)
        tops.append(float(step_metrics["probe_train_top1"]))
    assert tops[-1] > 0.8 > tops[0], tops
    predicted = jnp.argmax(probe.logits(state["params"], features), -1)
    assert float(jnp.mean(predicted == classes)) > 0.8


@pytest.mark.slow
def test_the_probe_and_the_diagnostics_never_change_the_encoder_update():
    states = {}
    for on in (True, False):
        config = make_tiny_config(diagnostics=on, **{"online_probe.enabled": on, "mix.kind": "mixup"})
        trainer = pretrain.build_trainer(config, parallel.create_mesh(), data.resolve(config))
        state, batches = trainer.state, trainer.batches(0)
        for _ in range(2):
            state, step_metrics = trainer.train_step(state, next(batches))
        states[on] = (jax.device_get(state), jax.device_get(step_metrics))
    (with_probe, metrics_on), (without, metrics_off) = states[True], states[False]
    assert with_probe.probe is not None and without.probe is None
    assert "probe_train_top1" in metrics_on and "positive_mass" in metrics_on and "positive_mass" not in metrics_off
    # Bit for bit: the same parameters, BatchNorm statistics, optimizer state and loss.
    assert_trees_equal((with_probe.params, with_probe.batch_stats, with_probe.opt_state),
                       (without.params, without.batch_stats, without.opt_state))
    assert metrics_on["loss"] == metrics_off["loss"] and metrics_on["grad_norm"] == metrics_off["grad_norm"]


@pytest.mark.slow
def test_the_probe_tests_above_chance_within_a_few_steps_of_pretraining(tmp_path):
    # Synthetic data: each class a fixed template plus noise, linearly separable; chance is 1 / 10.
    config = make_tiny_config(num_train_steps=30, batch_size=16, eval_every_steps=15, checkpoint_every_steps=100,
                              **{"online_probe.enabled": True, "online_probe.learning_rate": 0.01})
    summary = runner.run(config, str(tmp_path))
    assert summary["probe_top1"] > 0.3, summary
    assert summary["probe_best_top1"] >= summary["probe_top1"] and "knn_top1" not in summary


@pytest.mark.slow
def test_a_resumed_run_has_the_probe_metrics_of_an_uninterrupted_one(tmp_path):
    config = make_tiny_config(num_train_steps=4, checkpoint_every_steps=2, eval_every_steps=2,
                              **{"online_probe.enabled": True})

    def loop(workdir, crash_at=None):
        trainer = pretrain.build_trainer(config, parallel.create_mesh(), data.resolve(config))
        batches = trainer.batches

        def crashing(start):
            for i, batch in enumerate(batches(start)):
                if i == crash_at:
                    raise RuntimeError("machine lost")
                yield batch

        trainer.batches = crashing
        return train_loop.run(trainer, str(workdir), checkpoint_every_steps=2, log_every_steps=1)

    straight = loop(tmp_path / "straight")
    try:
        loop(tmp_path / "resumed", crash_at=3)
    except RuntimeError:
        pass
    resumed = loop(tmp_path / "resumed")
    for name in ("probe_top1", "probe_top5", "probe_best_top1"):
        assert resumed.eval_metrics[name] == straight.eval_metrics[name], name
    for name in ("probe_train_top1", "probe_loss"):
        assert resumed.last_metrics[name] == straight.last_metrics[name], name

    def probe_of(workdir):
        ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
        return ckpt.restore_subtree(("probe",))

    assert_trees_equal(probe_of(tmp_path / "straight"), probe_of(tmp_path / "resumed"))


@pytest.mark.slow
def test_diagnostics_with_the_key_queue_and_a_teacher():
    config = make_tiny_config(**{"moco.enabled": True, "moco.queue_size": 48, "mix.kind": "mixup",
                                 "kd.alpha": 0.5, "kd.teacher": "in-memory"})
    _, _, history = run_steps(config, 3, teacher=tiny_teacher(config))
    # 16 keys a step into 48 slots: after steps 1, 2, 3 the stored keys are 0; 0, 1; 0, 1, 2 steps old.
    np.testing.assert_allclose([h["key_age"] for h in history], [0.0, 0.5, 1.0])
    for h in history:
        assert 0.0 <= h["teacher_agreement"] <= 1.0
        assert h["positive_mass"] > 0 and h["positive_mass_teacher"] > 0  # a term per label source
        assert 0.0 < h["positive_prob"] < 1.0 and 0.0 <= h["alignment"] <= 4.0 and h["uniformity"] <= 0.0
