"""Supervised training and linear evaluation run through the same loop, and pretrain_and_eval chains them."""

import json

import jax
import numpy as np
import pytest
from conftest import make_tiny_config
from helpers import jit_init

from genscl_jax import data, runner
from genscl_jax.trainers import linear_eval
from genscl_jax.training import checkpointing

pytestmark = pytest.mark.slow  # trains a run or starts a process


def test_supervised_mode_learns_and_reports_test_accuracy(tmp_path):
    config = make_tiny_config(mode="supervised", num_train_steps=40, batch_size=32, learning_rate=0.1,
                              eval_batch_size=256, **{"mix.kind": "mixup"})
    summary = runner.run(config, str(tmp_path))
    assert summary["mode"] == "supervised" and summary["steps"] == 40
    # Ten synthetic classes: chance is 0.1; the classifier must be far above it.
    assert summary["test_top1"] > 0.5, summary
    assert summary["test_top5"] >= summary["test_top1"]


def test_pretrain_and_eval_writes_one_summary_and_keeps_the_encoder_frozen(tmp_path):
    config = make_tiny_config(mode="pretrain_and_eval", num_train_steps=3, eval_batch_size=256,
                              **{"linear_eval.batch_size": 256, "linear_eval.num_epochs": 0.05,
                                 "linear_eval.learning_rate": 1.0})
    summary = runner.run(config, str(tmp_path))
    with open(tmp_path / "summary.json") as f:
        written = json.load(f)
    assert written["mode"] == "pretrain_and_eval"
    for key in ("linear_eval_top1", "linear_eval_top5", "final_loss", "steps", "images_per_second"):
        assert key in written, key
    assert 0.0 <= written["linear_eval_top1"] <= written["linear_eval_top5"] <= 1.0
    assert written["pretrain"]["steps"] == 3 and summary["steps"] == 3
    # One meaning per key: the top level is pretraining's, the linear evaluation's summary is under linear_eval.
    assert written["final_metrics"]["loss"] == written["final_loss"] == written["pretrain"]["final_loss"]
    assert written["linear_eval"]["final_metrics"]["loss"] == written["linear_eval"]["final_loss"]
    assert written["linear_eval"]["linear_eval_top1"] == written["linear_eval_top1"]
    # The encoder read by linear evaluation is bit-identical to the pretraining checkpoint's.
    pretrained = checkpointing.Checkpointer(checkpointing.checkpoint_dir(tmp_path / "pretrain"),
                                            read_only=True).restore_subtree(("params",))["params"]["encoder"]
    frozen = linear_eval.load_frozen_encoder(str(tmp_path / "pretrain")).variables["params"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, pretrained, frozen)
    # Rerunning the finished run trains nothing and reports the same numbers, the final loss included.
    again = runner.run(config, str(tmp_path))
    for key in ("final_loss", "steps", "linear_eval_top1", "linear_eval_best_top1"):
        assert again[key] == summary[key], key
    assert np.isfinite(again["final_loss"])


def test_linear_eval_best_top1_survives_a_resume(tmp_path):
    from genscl_jax.models import model_builder
    from genscl_jax.runtime import parallel

    config = make_tiny_config(eval_batch_size=256)
    encoder = model_builder.build_encoder(config)
    variables = jit_init(encoder, jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32), train=False)
    trainer = linear_eval.build_trainer(config, parallel.create_mesh(), data.resolve(config), variables)
    trainer.resume_eval({"linear_eval_top1": 0.97, "linear_eval_best_top1": 0.97})
    metrics = trainer.periodic_eval(trainer.state, 0)  # an untrained classifier: far below 0.97
    assert metrics["linear_eval_top1"] < 0.9
    assert metrics["linear_eval_best_top1"] == 0.97


def test_linear_eval_reaches_logistic_regression_on_the_same_features(tmp_path):
    """The paper's protocol on precomputed features of a frozen random encoder vs scikit-learn's optimum."""
    from sklearn.linear_model import LogisticRegression

    from genscl_jax import data
    from genscl_jax.data import device_preprocess
    from genscl_jax.models import model_builder
    from genscl_jax.runtime import parallel
    from genscl_jax.training import train_loop

    config = make_tiny_config(eval_batch_size=256, **{
        "linear_eval.augment": "none", "linear_eval.precompute_features": True, "linear_eval.batch_size": 512,
        "linear_eval.num_epochs": 300.0, "linear_eval.learning_rate": 5.0, "linear_eval.decay_epochs": (180, 225, 270),
        "linear_eval.warmup_epochs": 5.0})
    mesh = parallel.create_mesh()
    encoder = model_builder.build_encoder(config)
    sample = np.zeros((1, config.image_size, config.image_size, 3), np.float32)
    variables = jit_init(encoder, jax.random.PRNGKey(7), sample, train=False)
    before = jax.device_get(variables)
    trainer = linear_eval.build_trainer(config, mesh, data.resolve(config), variables)
    result = train_loop.run(trainer, str(tmp_path), checkpoint_every_steps=10_000, log_every_steps=100)

    def features(split):
        feats, labels = [], []
        source = data.resolve(config)
        for batch in source.eval_batches(mesh, batch_size=config.eval_batch_size, split=split):
            keep = np.asarray(batch["mask"]).astype(bool)
            inputs = device_preprocess.normalize(batch["image"], source.eval_preprocessing())
            feats.append(np.asarray(encoder.apply(variables, inputs, train=False))[keep])
            labels.append(np.asarray(batch["label"])[keep])
        return np.concatenate(feats), np.concatenate(labels)

    (x_train, y_train), (x_test, y_test) = features("train"), features("test")
    oracle = LogisticRegression(C=1e4, max_iter=5000).fit(x_train, y_train).score(x_test, y_test)
    ours = result.eval_metrics["linear_eval_top1"]
    assert 0.3 < oracle < 0.99, oracle  # a task where the probe has something to learn and to miss
    assert abs(ours - oracle) <= 0.01, (ours, oracle)
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(variables), before)


def test_linear_eval_on_precomputed_features_evaluates_every_epoch(tmp_path):
    """The best-over-epochs top-1 is over every epoch, not ten samples of the run (20 epochs: 20 evaluations)."""
    from genscl_jax.models import model_builder
    from genscl_jax.runtime import parallel
    from genscl_jax.training import train_loop

    config = make_tiny_config(eval_batch_size=256, **{
        "linear_eval.augment": "none", "linear_eval.precompute_features": True, "linear_eval.batch_size": 256,
        "linear_eval.num_epochs": 20.0, "linear_eval.warmup_epochs": 0.0, "linear_eval.decay_epochs": ()})
    encoder = model_builder.build_encoder(config)
    variables = jit_init(encoder, jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32), train=False)
    trainer = linear_eval.build_trainer(config, parallel.create_mesh(), data.resolve(config), variables)
    evaluated = []
    evaluate = trainer.periodic_eval
    trainer.periodic_eval = lambda state, step: evaluated.append(step) or evaluate(state, step)
    result = train_loop.run(trainer, str(tmp_path), checkpoint_every_steps=10_000, log_every_steps=10_000)
    steps_per_epoch = result.steps // 20
    assert evaluated == [steps_per_epoch * (epoch + 1) for epoch in range(20)]
    assert result.eval_metrics["linear_eval_best_top1"] >= result.eval_metrics["linear_eval_top1"]


def test_linear_probe_of_a_supervised_run_reads_its_network_without_the_classifier(tmp_path):
    """The CE baseline gets the same linear probe as the contrastive encoders."""
    supervised = make_tiny_config(mode="supervised", num_train_steps=2)
    runner.run(supervised, str(tmp_path / "ce"))
    frozen = linear_eval.load_frozen_encoder(str(tmp_path / "ce")).variables
    trained = checkpointing.Checkpointer(checkpointing.checkpoint_dir(tmp_path / "ce"),
                                         read_only=True).restore_subtree(("params",))["params"]
    assert "fc" in trained and "fc" not in frozen["params"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, {k: v for k, v in trained.items() if k != "fc"},
                           frozen["params"])
    probe = make_tiny_config(mode="linear_eval", **{
        "linear_eval.pretrained_workdir": str(tmp_path / "ce"), "linear_eval.augment": "none",
        "linear_eval.precompute_features": True})
    summary = runner.run(probe, str(tmp_path / "probe"))
    assert 0.0 <= summary["linear_eval_top1"] <= 1.0


def test_supervised_step_takes_mix_prob():
    """With mix.prob 0 a mixup CE run trains on the unmixed images: the same losses as without mixing."""
    from genscl_jax.runtime import parallel
    from genscl_jax.trainers import supervised

    def losses(**overrides):
        config = make_tiny_config(mode="supervised", **overrides)
        trainer = supervised.build_trainer(config, parallel.create_mesh(), data.resolve(config))
        state, batches, seen = trainer.state, trainer.batches(0), []
        for _ in range(2):
            state, metrics = trainer.train_step(state, next(batches))
            seen.append(float(metrics["loss"]))
        return seen

    unmixed = losses()
    np.testing.assert_array_equal(losses(**{"mix.kind": "mixup", "mix.prob": 0.0}), unmixed)
    assert not np.allclose(losses(**{"mix.kind": "mixup"}), unmixed)
