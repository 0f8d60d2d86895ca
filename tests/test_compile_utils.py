"""config.cpu_convolutions: which library runs CPU convolutions, how "auto" decides, and that trainers use it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genscl_jax import compile_utils, config_validation, parallel, pretrain, supervised
from conftest import make_tiny_config

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"


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
    eigen = jax.jit(conv_weight_gradient, **compile_utils.model_jit_options(config, 16)).lower(x, w).compile()
    if "ynn_fusion" not in default.as_text():
        pytest.skip("this jaxlib's XLA:CPU does not use YNNPACK for convolutions: nothing to switch")
    assert "ynn_fusion" not in eigen.as_text()
    expected = np.asarray(default(x, w))
    # Sums of 16k products in another order: equal to float32 rounding relative to the gradient's scale.
    np.testing.assert_allclose(eigen(x, w), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("choice, images, expected", [
    ("auto", 16, "ynnpack"),  # the test configs: 8 px, 4 channels
    ("auto", 256, "ynnpack"),
    ("auto", 1024 * 64, "eigen"),
    ("eigen", 16, "eigen"),
    ("ynnpack", 1024 * 64, "ynnpack"),
])
def test_convolution_library_choice(choice, images, expected):
    assert compile_utils.convolution_library(make_tiny_config(cpu_convolutions=choice), images) == expected


def test_auto_follows_the_measured_sizes():
    """BENCHMARKS.md 1.3: Eigen is 0.72x YNNPACK's step time at the quickstart's 128 x 2 views of 28 px at width
    1/8, 1.19x for ResNet-50 at 8 x 2 views of 32 px, 0.71x for ResNet-50 at 32 x 2 views."""
    quickstart = make_tiny_config(image_size=28, width_multiplier=0.125, batch_size=128)
    assert compile_utils.first_stage_activations(quickstart, 256) == 256 * 28 * 28 * 8
    assert compile_utils.convolution_library(quickstart, 256) == "eigen"
    assert compile_utils.convolution_library(quickstart, 32) == "ynnpack"
    resnet50 = make_tiny_config(model="resnet50", image_size=32, width_multiplier=1.0)
    assert compile_utils.convolution_library(resnet50, 16) == "ynnpack"
    assert compile_utils.convolution_library(resnet50, 64) == "eigen"
    imagenet = make_tiny_config(image_size=224, stem="auto", width_multiplier=1.0)
    assert compile_utils.first_stage_activations(imagenet, 8) == 8 * 56 * 56 * 64  # the stride-4 stem


def test_options_are_empty_where_the_choice_is_ynnpack():
    assert compile_utils.model_jit_options(make_tiny_config(cpu_convolutions="ynnpack"), 10**6) == {}
    options = compile_utils.model_jit_options(make_tiny_config(cpu_convolutions="eigen"), 1)
    assert options in ({}, {"compiler_options": {YNN_OPTION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}})


def test_bad_choice_is_a_config_error():
    with pytest.raises(config_validation.ConfigError, match="cpu_convolutions"):
        config_validation.validate(make_tiny_config(cpu_convolutions="onednn"), num_devices=1)


def test_trainers_ask_for_their_own_per_device_image_counts(monkeypatch):
    seen = []

    def spy(config, images_per_device):
        seen.append(images_per_device)
        return {}

    monkeypatch.setattr(compile_utils, "model_jit_options", spy)
    mesh = parallel.create_mesh()
    devices = mesh.devices.size
    config = make_tiny_config(batch_size=8 * devices, eval_batch_size=16 * devices)
    pretrain.build_trainer(config, mesh)
    assert seen == [8 * 2]  # two views per source image
    seen.clear()
    supervised.build_trainer(make_tiny_config(batch_size=8 * devices, eval_batch_size=16 * devices), mesh)
    assert seen == [8, 16]
