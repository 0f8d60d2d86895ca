"""Schedules and the weight-decay masks of LARS/AdamW."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genscl_jax.training import optimizers


def test_warmup_then_cosine_to_the_floor():
    schedule = optimizers.warmup_cosine_schedule(peak_lr=0.5, total_steps=100, warmup_steps=10,
                                                 warmup_start_lr=0.01, min_lr_factor=1e-3)
    np.testing.assert_allclose(float(schedule(0)), 0.01, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(5)), 0.01 + 0.49 / 2, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(10)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(55)), 0.5e-3 + (0.5 - 0.5e-3) / 2, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(100)), 0.5e-3, rtol=1e-5)


def test_batch_scaling():
    class C:
        learning_rate, batch_size, lr_batch_scaling = 0.3, 4096, True
    assert optimizers.peak_learning_rate(C) == pytest.approx(4.8)


@pytest.mark.parametrize("name", ["lars", "adamw"])
def test_batchnorm_and_bias_are_not_decayed(name):
    params = {"kernel": jnp.ones((3, 3)), "bias": jnp.ones((3,)), "scale": jnp.ones((3,))}
    tx = optimizers.create_optimizer(name=name, learning_rate=lambda _: 0.1, momentum=0.9, nesterov=False,
                                     weight_decay=0.5)
    zero_grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    # With zero gradients only weight decay moves a parameter.
    assert float(jnp.abs(updates["kernel"]).sum()) > 0
    assert float(jnp.abs(updates["bias"]).sum()) == 0 and float(jnp.abs(updates["scale"]).sum()) == 0


def test_sgd_decays_everything_like_torch_sgd():
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    tx = optimizers.create_optimizer(name="sgd", learning_rate=lambda _: 0.1, momentum=0.9, nesterov=True,
                                     weight_decay=0.5)
    updates, _ = tx.update(jax.tree_util.tree_map(jnp.zeros_like, params), tx.init(params), params)
    # Nesterov's first step is lr * (1 + momentum) * (wd * p).
    np.testing.assert_allclose(updates["bias"], -0.1 * 1.9 * 0.5, rtol=1e-6)
