"""Which XLA options our programs compile with.

One-off programs. XLA's CPU backend spends most of its compile time optimising random-number code (threefry),
which dominates one-off programs such as parameter initialisation: a tiny ResNet-18's init took ~25 s to compile
at full optimisation and ~3 s without backend optimisation on a 2-core CPU. Programs that run once (or are
trivially cheap) are therefore compiled without backend optimisation on CPU; accelerators keep their defaults.

Convolutions on CPU. jaxlib 0.10 runs every CPU convolution in YNNPACK, whose weight-gradient convolutions are
2-2.5x slower than Eigen's at the activation sizes of real training (BENCHMARKS.md section 1.2). Sending the
convolutions to Eigen (YNNPACK keeps the matmuls) makes ResNet steps 1.3-1.4x faster and level with PyTorch's
oneDNN, while at toy sizes YNNPACK stays ahead by 5-20%. `config.cpu_convolutions` chooses: "eigen",
"ynnpack", or "auto" (Eigen when a program's first-stage activations are large enough to pay; see
EIGEN_MIN_ACTIVATIONS). The choice never changes the numbers beyond float32 rounding.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from genscl_jax import model_builder, models

_CPU_ONE_OFF_OPTIONS = {"xla_backend_optimization_level": 0}

# Per-compile spelling of XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot: YNNPACK for matmuls
# only, so convolutions and their gradients are emitted as Eigen convolutions.
_EIGEN_CONVOLUTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
# "auto" picks Eigen from this many first-stage activation values per device (images x H x W x channels after
# the stem), by block type. Step time ratios Eigen / YNNPACK measured on a 2-vCPU Cascade Lake (BENCHMARKS.md
# 1.3): basic blocks 0.92 at 0.4M, 1.05-1.2 at 0.5M, 0.84 at 0.8M, 0.85 at 1M, 0.72 at 1.6M (the quickstart),
# 0.70-0.75 at 2M-4M; bottleneck blocks (many 1x1 convolutions, which YNNPACK does well) 1.1-1.2 at 1M and 0.71
# at 4M.
EIGEN_MIN_ACTIVATIONS = {1: 600_000, 4: 2_000_000}  # keyed by block expansion


def cheap_compile_options() -> dict[str, Any] | None:
    return dict(_CPU_ONE_OFF_OPTIONS) if jax.default_backend() == "cpu" else None


def compile_cheaply(fn: Callable, *args: Any, **jit_kwargs: Any):
    """jit(fn) lowered for `args` and compiled with cheap options; call the result with arrays like `args`."""
    return jax.jit(fn, **jit_kwargs).lower(*args).compile(compiler_options=cheap_compile_options())


def run_once(fn: Callable, *args: Any, **jit_kwargs: Any) -> Any:
    """fn(*args) through a program compiled cheaply, for work done once per run (e.g. initialisation)."""
    return compile_cheaply(fn, *args, **jit_kwargs)(*args)


def first_stage_activations(config: Any, images_per_device: int) -> int:
    """Values in one device's first-stage activation map (after the stem), the size that decides the library."""
    stride = 1 if model_builder.resolve_stem(config.stem, config.image_size) == "cifar" else 4
    side = -(-config.image_size // stride)
    return images_per_device * side * side * models.stage_widths(config.width_multiplier)[0]


def convolution_library(config: Any, images_per_device: int) -> str:
    """"eigen" or "ynnpack": config.cpu_convolutions, with "auto" resolved for this program's size."""
    choice = config.cpu_convolutions
    if choice == "auto":
        threshold = EIGEN_MIN_ACTIVATIONS[models.block_expansion(config.model)]
        big = first_stage_activations(config, images_per_device) >= threshold
        choice = "eigen" if big else "ynnpack"
    return choice


def model_jit_options(config: Any, images_per_device: int) -> dict[str, Any]:
    """Keyword arguments for jax.jit of a program that runs the network on `images_per_device` images per device:
    the convolution library on CPU (nothing elsewhere, or where this jaxlib has no YNNPACK to switch away from)."""
    if jax.default_backend() != "cpu" or convolution_library(config, images_per_device) != "eigen":
        return {}
    if not _backend_accepts(tuple(sorted(_EIGEN_CONVOLUTIONS.items()))):
        return {}  # an XLA:CPU without YNNPACK fusions already runs convolutions in Eigen
    return {"compiler_options": dict(_EIGEN_CONVOLUTIONS)}


@functools.cache
def _backend_accepts(options: tuple[tuple[str, str], ...]) -> bool:
    try:
        jax.jit(jnp.negative).lower(jnp.zeros(())).compile(compiler_options=dict(options))
    except Exception:  # noqa: BLE001 - an unknown option name or value, whatever this jaxlib raises for it
        return False
    return True
