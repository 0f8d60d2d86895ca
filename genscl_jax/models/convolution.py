"""A 2-D convolution whose gradients are canonical convolutions, for XLA:CPU inside loops.

XLA:CPU runs a convolution in Eigen only in canonical form (NHWC input, HWIO kernel, NHWC output) and rewrites
the others into it (ConvCanonicalization) only in a program's entry computation. The convolutions JAX derives for
the input and weight gradients have swapped dimension labels (batch and features exchanged, kernel in/out
exchanged), so inside a loop body they keep them and fall back to XLA's generic convolution loops: a micro-batched
step (training/micro_batches.py) runs its backward pass in a `lax.scan`, and there it ran many times slower than
the dense step (BENCHMARKS.md, "Memory-bounded step"). GPU and TPU compilers handle any layout, so the builder
uses this only on CPU (models/model_builder.py); elsewhere the explicit transposes would only constrain the
compiler's own layout choice, and a custom_vjp has no forward-mode derivative.

`canonical_gradient_conv` has lax.conv_general_dilated's forward and the same gradients (in float32 on CPU bitwise
or, where Eigen sums a case in another order, within a few ulps: tests/test_convolution.py), written as canonical
convolutions of explicitly transposed operands, what ConvCanonicalization would have produced:
- input gradient: the output gradient, dilated by the strides, convolved with the spatially flipped kernel whose
  in/out features are swapped;
- weight gradient: the input with batch and features swapped, convolved with the output gradient as the kernel
  (batch as its input features), dilated by the strides.
Convolutions it does not cover (dilations, groups, other layouts, a precision) are lax.conv_general_dilated's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_CANONICAL = ("NHWC", "HWIO", "NHWC")


def canonical_gradient_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                            dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                            preferred_element_type=None):
    """lax.conv_general_dilated (same arguments), with canonical gradient convolutions for the plain 2-D case."""
    plain = (lhs.ndim == 4 and not isinstance(padding, str) and feature_group_count == 1 and batch_group_count == 1
             and precision is None and preferred_element_type is None
             and tuple(lhs_dilation or (1, 1)) == (1, 1) and tuple(rhs_dilation or (1, 1)) == (1, 1)
             and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _CANONICAL))
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
            batch_group_count=batch_group_count, precision=precision, preferred_element_type=preferred_element_type)
    return _conv(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding))


def _canonical(x, w, strides, padding, lhs_dilation=(1, 1), rhs_dilation=(1, 1)):
    return lax.conv_general_dilated(x, w, strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                                    dimension_numbers=_CANONICAL)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, padding):
    return _canonical(x, w, strides, padding)


def _conv_forward(x, w, strides, padding):
    return _canonical(x, w, strides, padding), (x, w)


def _conv_backward(strides, padding, residuals, g):
    x, w = residuals
    kernel = w.shape[:2]
    # Input rows the strided forward never reached at the far edge get zero gradient: extra padding there.
    left_over = [(x.shape[1 + d] + sum(padding[d]) - kernel[d]) % strides[d] for d in range(2)]
    flipped = jnp.flip(w, (0, 1)).swapaxes(2, 3)  # [kh, kw, O, I]: HWIO for the transposed convolution
    input_padding = [(kernel[d] - 1 - padding[d][0], kernel[d] - 1 - padding[d][1] + left_over[d]) for d in range(2)]
    dx = _canonical(g, flipped, (1, 1), input_padding, lhs_dilation=strides)
    # [C, H, W, N] * [Ho, Wo, N, O] -> [C, kh (+ left over), kw (+ left over), O]
    dw = _canonical(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (1, 1), padding, rhs_dilation=strides)
    dw = dw[:, :kernel[0], :kernel[1], :].transpose(1, 2, 0, 3)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_conv.defvjp(_conv_forward, _conv_backward)
