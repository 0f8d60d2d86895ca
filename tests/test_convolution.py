"""models/convolution.py: a convolution with lax.conv_general_dilated's values and gradients whose gradient
convolutions XLA:CPU runs in canonical form inside loop bodies (the micro-batched step's lax.scan)."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_tiny_config
from jax import lax

from genscl_jax.models import model_builder
from genscl_jax.models.convolution import canonical_gradient_conv

NHWC = ("NHWC", "HWIO", "NHWC")


def conv_and_gradients(conv, x, w, stride, padding):
    """(forward, d/dx, d/dw) of a nonlinear function of conv's output, jitted as a training step is."""
    def f(x, w):
        return conv(x, w, (stride, stride), padding, dimension_numbers=NHWC)

    def loss(x, w):
        return jnp.sum(jnp.sin(f(x, w)).astype(jnp.float32))

    return jax.jit(lambda x, w: (f(x, w), *jax.grad(loss, (0, 1))(x, w)))(x, w)


# ResNet's convolutions (torchvision padding kernel // 2): 1x1 (bottleneck, projection shortcut), 3x3, the 7x7 stem;
# stride 1 and 2; even and odd sizes (odd: the strided forward leaves the far edge's last row unread).
@pytest.mark.parametrize("kernel,stride,size", [(k, s, n) for k in (1, 3, 7) for s in (1, 2) for n in (8, 9)])
def test_forward_is_lax_conv_general_dilated_and_both_gradients_agree_to_float32_rounding(kernel, stride, size):
    """The forward is lax's own convolution: bitwise. The gradients are other convolutions of the same numbers:
    bitwise on the CPUs CI has run on, but on an AVX2-only AMD EPYC one of these twelve (7x7, stride 2, 8 px) sums
    its weight gradient in another order (6 ulps of small entries, 3e-8 of the largest); a wrong gradient (a kernel
    not flipped, a stride not dilated, an edge row lost) is off by the size of the entries themselves."""
    x = jax.random.normal(jax.random.PRNGKey(0), (3, size, size, 4))
    w = jax.random.normal(jax.random.PRNGKey(1), (kernel, kernel, 4, 6))
    padding = [(kernel // 2, kernel // 2)] * 2
    expected = conv_and_gradients(lax.conv_general_dilated, x, w, stride, padding)
    results = conv_and_gradients(canonical_gradient_conv, x, w, stride, padding)
    for name, got, want in zip(("forward", "dx", "dw"), results, expected):
        assert got.shape == want.shape and got.dtype == want.dtype, name
        if name == "forward":
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:  # each entry within 1e-6 of the gradient's largest entry
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * float(np.abs(want).max()), err_msg=name)


def test_bfloat16_gradients_agree_to_bfloat16_rounding():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, 4), jnp.bfloat16)
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 6), jnp.bfloat16)
    expected = conv_and_gradients(lax.conv_general_dilated, x, w, 2, [(1, 1)] * 2)
    for got, want in zip(conv_and_gradients(canonical_gradient_conv, x, w, 2, [(1, 1)] * 2), expected):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=2e-2, atol=2e-2)


def test_other_convolutions_are_lax_conv_general_dilated_itself():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 6))

    def jaxpr(f, w):
        return str(jax.make_jaxpr(f)(x, w))

    plain = jaxpr(lambda x, w: canonical_gradient_conv(x, w, (1, 1), [(1, 1)] * 2, dimension_numbers=NHWC),
                           jnp.ones((3, 3, 4, 6)))
    assert "custom_vjp" in plain  # the covered case goes through the canonical gradients
    for kwargs in (dict(padding="SAME", feature_group_count=2), dict(padding=[(1, 1)] * 2, feature_group_count=2),
                   dict(padding=[(2, 2)] * 2, rhs_dilation=(2, 2), feature_group_count=2)):
        def f(x, w, kwargs=kwargs):
            return canonical_gradient_conv(x, w, (1, 1), dimension_numbers=NHWC, **kwargs)

        assert "custom_vjp" not in jaxpr(f, w), kwargs
        np.testing.assert_array_equal(f(x, w), lax.conv_general_dilated(x, w, (1, 1), dimension_numbers=NHWC,
                                                                         **kwargs))


def test_flax_conv_takes_it_with_the_same_variables_and_values():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, 3))
    plain = nn.Conv(5, (3, 3), (2, 2), padding=[(1, 1)] * 2, use_bias=False)
    canonical = nn.Conv(5, (3, 3), (2, 2), padding=[(1, 1)] * 2, use_bias=False,
                        conv_general_dilated=canonical_gradient_conv)
    variables = plain.init(jax.random.PRNGKey(1), x)
    assert jax.tree_util.tree_structure(canonical.init(jax.random.PRNGKey(1), x)) == \
        jax.tree_util.tree_structure(variables)

    def gradients(module):
        return jax.grad(lambda v, x: jnp.sum(jnp.tanh(module.apply(v, x))), (0, 1))(variables, x)

    for a, b in zip(jax.tree_util.tree_leaves(gradients(canonical)), jax.tree_util.tree_leaves(gradients(plain))):
        np.testing.assert_array_equal(a, b)


def scanned_gradient_convolutions(conv) -> set[str]:
    """The dim_labels of every convolution in the CPU-compiled gradient of a lax.scan over micro-batches, as the
    micro-batched step's backward pass has them."""
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 4))
    micro_batches = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 9, 9, 4))

    def loss(w, micro_batches):
        def body(carry, x):
            return carry, jnp.sum(jnp.sin(conv(x, w, (2, 2), [(1, 1)] * 2, dimension_numbers=NHWC)))
        return jnp.sum(lax.scan(body, None, micro_batches)[1])

    compiled = jax.jit(jax.grad(loss, (0, 1))).lower(w, micro_batches).compile()  # the tests run on CPU
    return set(re.findall(r"dim_labels=([\w>-]+)", compiled.as_text()))


def test_inside_a_scan_every_gradient_convolution_is_canonical_on_cpu():
    canonical = "b01f_01io->b01f"  # NHWC input, HWIO kernel, NHWC output: the only form XLA:CPU runs in Eigen
    assert scanned_gradient_convolutions(canonical_gradient_conv) == {canonical}
    # What it replaces: JAX's own gradient convolutions keep swapped labels inside the loop body.
    assert scanned_gradient_convolutions(lax.conv_general_dilated) - {canonical}


def test_the_builder_uses_it_only_for_a_micro_batched_step_compiled_for_cpu():
    def encoder(platform="cpu", **changes):
        return model_builder.build_encoder(make_tiny_config(batch_size=16, **changes), training_views=2,
                                           platform=platform)

    assert encoder(micro_batch_size=4).canonical_conv_gradients
    # The platform the step is compiled for decides, not the host's (a TPU step compiled from this CPU host).
    assert not encoder("tpu", micro_batch_size=4).canonical_conv_gradients
    assert not encoder("gpu", micro_batch_size=4).canonical_conv_gradients
    assert not encoder().canonical_conv_gradients and not encoder(bn_group_size=4).canonical_conv_gradients
    evaluation = model_builder.build_encoder(make_tiny_config(batch_size=16, micro_batch_size=4))
    assert not evaluation.canonical_conv_gradients
