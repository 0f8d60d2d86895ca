"""Micro-batched steps (config.micro_batch_size), ghost BatchNorm (config.bn_group_size) and block remat
(config.remat): the micro-batched step is the dense step with the same BatchNorm groups, computed in pieces, and
its memory grows with the micro-batch, not with the batch."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_tiny_config
from helpers import tiny_teacher

from genscl_jax import data, models
from genscl_jax.runtime import parallel
from genscl_jax.tools import bench, step_bench
from genscl_jax.trainers import pretrain, supervised
from genscl_jax.training import micro_batches

BN = dict(momentum=0.9, epsilon=1e-5, dtype=jnp.float32)


def test_micro_batches_are_strided_with_their_views_and_merge_back():
    rows = jnp.arange(12 * 2).reshape(24, 1)  # 12 source images x 2 views, batch-major: row = 2 * image + view
    split = micro_batches.split(rows, 3, 2)
    assert split.shape == (3, 8, 1)
    images = np.asarray(split[..., 0]) // 2
    for k in range(3):  # micro-batch k: images k, k + 3, k + 6, k + 9, each with both views, in order
        np.testing.assert_array_equal(images[k], np.repeat(np.arange(k, 12, 3), 2))
    np.testing.assert_array_equal(micro_batches.merge(split, 2), rows)
    assert micro_batches.MicroBatches.of(12, 0).num == 1 and micro_batches.MicroBatches.of(12, 12).num == 1
    with pytest.raises(ValueError, match="micro_batch_size=5 does not divide the batch of 12"):
        micro_batches.MicroBatches.of(12, 5)


def test_ghost_batch_norm_is_batch_norm_per_strided_group_with_the_mean_update():
    x = jax.random.normal(jax.random.PRNGKey(0), (24, 3, 3, 4)) * 2 + 1  # 12 images x 2 views
    variables = {"params": {"scale": jnp.arange(4.0) + 1, "bias": jnp.arange(4.0)},
                 "batch_stats": {"mean": jnp.ones(4), "var": 2 * jnp.ones(4)}}
    plain = nn.BatchNorm(use_running_average=False, **BN)
    ghost = models.GhostBatchNorm(use_running_average=False, groups=models.BatchNormGroups(4, 2), **BN)
    y, updated = ghost.apply(variables, x, mutable=["batch_stats"])
    # Reference: nn.BatchNorm on each group alone (images g, g + 3, g + 6, g + 9 with their views).
    groups = micro_batches.split(x, 3, 2)
    per_group = [plain.apply(variables, group, mutable=["batch_stats"]) for group in groups]
    np.testing.assert_allclose(y, micro_batches.merge(jnp.stack([out for out, _ in per_group]), 2), atol=1e-6)
    for name in ("mean", "var"):  # running statistics: the mean over groups of each group's update
        expected = np.mean([stats["batch_stats"][name] for _, stats in per_group], axis=0)
        np.testing.assert_allclose(updated["batch_stats"][name], expected, rtol=1e-6)
    # One group is nn.BatchNorm exactly; evaluation uses the running statistics either way.
    whole = models.GhostBatchNorm(use_running_average=False, groups=models.BatchNormGroups(12, 2), **BN)
    for a, b in zip(jax.tree_util.tree_leaves(whole.apply(variables, x, mutable=["batch_stats"])),
                    jax.tree_util.tree_leaves(plain.apply(variables, x, mutable=["batch_stats"]))):
        np.testing.assert_array_equal(a, b)
    evaluation = models.GhostBatchNorm(use_running_average=True, groups=ghost.groups, **BN)
    np.testing.assert_array_equal(evaluation.apply(variables, x),
                                  nn.BatchNorm(use_running_average=True, **BN).apply(variables, x))


def run(config, steps=2, teacher=None, trainer_module=pretrain):
    """The states after each step and the metrics of each step."""
    kwargs = {"teacher": teacher} if teacher else {}
    trainer = trainer_module.build_trainer(config, parallel.create_mesh(), data.resolve(config), **kwargs)
    state, batches, states, history = trainer.state, trainer.batches(0), [], []
    for _ in range(steps):
        state, metrics = trainer.train_step(state, next(batches))
        states.append(jax.device_get(state))
        history.append(jax.device_get(metrics))
    return states, history


def assert_same_steps(a, b, tolerance=1e-5):
    """Every metric and every state field (params, batch_stats, optimizer traces, EMA, queue, online probe) after
    every step: metrics elementwise to `tolerance`, each state field to `tolerance` relative to its norm (and each
    leaf to 10x that). Relative, because the two compute float32 sums over thousands of rows in different orders:
    gradients whose entries nearly cancel differ by ~1e-5 of their size, which an absolute bound would call a bug."""
    (states_a, history_a), (states_b, history_b) = a, b
    for metrics_a, metrics_b in zip(history_a, history_b):
        assert metrics_a.keys() == metrics_b.keys()
        for key in metrics_a:
            np.testing.assert_allclose(metrics_a[key], metrics_b[key], rtol=tolerance, atol=tolerance, err_msg=key)
    for state_a, state_b in zip(states_a, states_b):
        for field in ("params", "batch_stats", "opt_state", "ema", "queue", "probe"):
            tree_a, tree_b = getattr(state_a, field), getattr(state_b, field)
            assert jax.tree_util.tree_structure(tree_a) == jax.tree_util.tree_structure(tree_b), field
            leaves = [(np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel())
                      for x, y in zip(jax.tree_util.tree_leaves(tree_a), jax.tree_util.tree_leaves(tree_b))]
            if not leaves:  # e.g. no queue in supervised training
                continue
            assert relative_difference(*map(np.concatenate, zip(*leaves))) <= tolerance, field
            assert max(relative_difference(x, y) for x, y in leaves) <= 10 * tolerance, field


def relative_difference(x: np.ndarray, y: np.ndarray) -> float:
    """|x - y| / |y| (Euclidean norms); 0 for two zero vectors."""
    scale = np.linalg.norm(y)
    return float(np.linalg.norm(x - y) / scale) if scale else float(np.linalg.norm(x))


# Every input path: colour augmentation on the device (each view's own key), Mixup/CutMix with a coin per view
# (partners from other micro-batches), a teacher and the MoCo queue; and the online probe on the pooled features.
GENSCL = {"batch_size": 16, "moco.enabled": True, "moco.queue_size": 64, "mix.kind": "mixup_cutmix",
          "mix.prob": 0.7, "device_color_augment": True, "kd.alpha": 0.5, "kd.teacher": "in-memory",
          "online_probe.enabled": True}


@pytest.mark.slow
def test_micro_batched_step_is_the_dense_step_with_the_same_batch_norm_groups():
    """Mixup/CutMix, a teacher and the MoCo queue: loss terms, gradient norm, parameters, BatchNorm statistics,
    the optimizer's traces (after step 1: the gradients), the EMA encoder and the queue agree; remat changes nothing."""
    teacher = tiny_teacher(make_tiny_config())
    dense = run(make_tiny_config(bn_group_size=4, **GENSCL), teacher=teacher)
    micro = run(make_tiny_config(micro_batch_size=4, **GENSCL), teacher=teacher)
    assert micro[0][0].probe is not None  # compared below, with every other state field
    assert_same_steps(micro, dense)
    remat = run(make_tiny_config(micro_batch_size=4, remat="blocks", **GENSCL), teacher=teacher)
    assert_same_steps(remat, micro, tolerance=1e-6)


@pytest.mark.slow
def test_micro_batch_of_the_whole_batch_is_the_dense_step_to_float32_rounding():
    """micro_batch_size equal to the batch is one micro-batch: the dense step. The one difference left is that the
    builder takes models/convolution.py's canonical gradient convolutions for any micro_batch_size on CPU; they
    round like lax's own on some CPUs and differ by a few ulps on others (tests/test_convolution.py), so this checks
    1e-6 of each state field's norm, not bits."""
    # Mixing with a coin per view; GENSCL's teacher, queue and colour augmentation are compared in the test above.
    mixed = {"batch_size": 16, "mix.kind": "mixup_cutmix", "mix.prob": 0.7, "online_probe.enabled": True}
    dense = run(make_tiny_config(**mixed), steps=1)
    whole = run(make_tiny_config(micro_batch_size=16, **mixed), steps=1)
    assert_same_steps(whole, dense, tolerance=1e-6)


@pytest.mark.slow
def test_supervised_micro_batches_are_the_dense_step_with_the_same_groups():
    common = {"mode": "supervised", "batch_size": 16, "mix.kind": "cutmix"}
    dense = run(make_tiny_config(bn_group_size=4, **common), trainer_module=supervised)
    micro = run(make_tiny_config(micro_batch_size=4, **common), trainer_module=supervised)
    whole_batch_norm = run(make_tiny_config(**common), trainer_module=supervised, steps=1)
    assert_same_steps(micro, dense)
    # The groups matter: the mean of group variances is not the batch variance.
    whole_var = whole_batch_norm[0][0].batch_stats["bn_init"]["var"]
    assert np.abs(whole_var - micro[0][0].batch_stats["bn_init"]["var"]).max() > 1e-3


def plan(per_device_batch, **flags):
    """The compiled step's memory plan (compiled.memory_analysis, deterministic) for a small ResNet whose
    activations dominate its memory: python -m genscl_jax.bench --plan-only with these flags."""
    argv = ["--model", "resnet10", "--width", "0.25", "--stem", "cifar", "--image-size", "16", "--num-classes", "10",
            "--head-dim", "16", "--head-hidden-dim", "32", "--per-device-batch", str(per_device_batch), "--plan-only"]
    for flag, value in flags.items():
        argv += [f"--{flag.replace('_', '-')}", str(value)]
    return step_bench.plan_step(bench.parse_args(argv))["memory_plan"]


@pytest.mark.slow  # compiles the whole train step five times, up to batch 64: a short run's cost
def test_memory_plan_grows_with_the_micro_batch_not_the_batch():
    dense, dense_4x = plan(16), plan(64)
    micro_4x = plan(64, micro_batch_size=16)  # 4 micro-batches of the per-device batch 16 above
    assert dense_4x["temp"] > 3 * dense["temp"], (dense, dense_4x)
    assert micro_4x["temp"] < 1.5 * dense["temp"], (dense, micro_4x)
    # Block remat keeps only the blocks' inputs, with or without micro-batches (on CPU too: compile_options keeps
    # jax.checkpoint's barriers, which XLA:CPU would otherwise drop before merging the recomputation back).
    assert plan(64, remat="blocks")["temp"] < 0.8 * dense_4x["temp"]
    assert plan(64, micro_batch_size=16, remat="blocks")["temp"] < 0.8 * micro_4x["temp"]

