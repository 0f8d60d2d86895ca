"""config.cpu_convolutions: which library runs CPU convolutions, what stays in YNNPACK, and that trainers use it."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_tiny_config

from genscl_jax import data
from genscl_jax.config import validation
from genscl_jax.runtime import compile_options, parallel
from genscl_jax.trainers import pretrain, supervised

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"


def convolutions_in_ynnpack(hlo_text: str) -> int:
    """How many convolutions sit inside the computations that YNNPACK fusions call, in a compiled HLO text."""
    called = set(re.findall(r"%ynn_fusion[.\d]* = .*?calls=(%[\w.\-]+)", hlo_text))
    bodies = re.split(r"\n(?=\S)", hlo_text)  # one chunk per computation
    return sum(body.count(" convolution(") for body in bodies if body.split(" ", 1)[0] in called)


def conv_weight_gradient(x, w):
    def loss(w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(y * y)
    return jax.grad(loss)(w)


def test_eigen_option_moves_convolutions_out_of_ynnpack_and_keeps_the_numbers():
    # A size at which jaxlib 0.10 puts convolutions into YNNPACK fusions.
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 32, 32, 64))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 64, 64)) * 0.05
    config = make_tiny_config(cpu_convolutions="eigen")
    default = jax.jit(conv_weight_gradient).lower(x, w).compile()
    eigen = jax.jit(conv_weight_gradient, **compile_options.model_jit_options(config, "cpu")).lower(x, w).compile()
    if not convolutions_in_ynnpack(default.as_text()):
        pytest.skip("this jaxlib's XLA:CPU does not use YNNPACK for convolutions: nothing to switch")
    assert convolutions_in_ynnpack(eigen.as_text()) == 0
    assert " convolution(" in eigen.as_text()
    expected = np.asarray(default(x, w))
    # Sums of 16k products in another order: equal to float32 rounding relative to the gradient's scale.
    np.testing.assert_allclose(eigen(x, w), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_options_are_empty_for_ynnpack_and_keep_matmuls_and_reductions_in_ynnpack_for_eigen():
    assert compile_options.model_jit_options(make_tiny_config(cpu_convolutions="ynnpack"), "cpu") == {}
    options = compile_options.model_jit_options(make_tiny_config(cpu_convolutions="eigen"), "cpu")
    # YNNPACK keeps matmuls and reductions (XLA's own reductions are over 10x slower here).
    kept = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    assert options in ({}, {"compiler_options": {YNN_OPTION: kept}})


def test_eigen_keeps_batchnorm_statistics_out_of_xla_reduce_window():
    """Without YNNPACK reductions XLA:CPU rewrites big sums into reduce-window loops (10-16x slower)."""
    x = jnp.ones((64, 32, 32, 32))
    stats = jax.jit(lambda x: (jnp.mean(x, axis=(0, 1, 2)), jnp.mean(x * x, axis=(0, 1, 2))),
                    **compile_options.model_jit_options(make_tiny_config(cpu_convolutions="eigen"), "cpu"))
    assert "reduce-window" not in stats.lower(x).compile().as_text()


def test_bad_choice_is_a_config_error():
    with pytest.raises(validation.ConfigError, match="cpu_convolutions"):
        validation.validate(make_tiny_config(cpu_convolutions="onednn"), num_devices=1)


@pytest.mark.slow
def test_trainers_compile_the_network_with_the_configured_library(monkeypatch):
    seen = []

    def spy(config, platform):
        assert platform == parallel.mesh_platform(mesh)
        seen.append(config.cpu_convolutions)
        return {}

    monkeypatch.setattr(compile_options, "model_jit_options", spy)
    mesh = parallel.create_mesh()
    config = make_tiny_config(cpu_convolutions="ynnpack")
    pretrain.build_trainer(config, mesh, data.resolve(config))
    assert seen and set(seen) == {"ynnpack"}  # the step and the periodic evaluation
    seen.clear()
    supervised.build_trainer(make_tiny_config(), mesh, data.resolve(make_tiny_config()))
    assert seen and set(seen) == {"eigen"}  # the default
