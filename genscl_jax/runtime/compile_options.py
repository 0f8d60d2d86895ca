"""Which XLA options our programs compile with.

One-off programs. XLA's CPU backend spends most of its compile time optimising random-number code (threefry),
which dominates one-off programs such as parameter initialisation: skipping backend optimisation compiles them
several times faster. Programs that run once (or are trivially cheap) are therefore compiled without backend
optimisation on CPU; accelerators keep their defaults.

Every choice here is for the platform the program is compiled for (parallel.mesh_platform of its mesh), never the
host's default backend: a TPU or GPU program compiled deviceless from a CPU host (genscl_jax.plan) must be the
program that device's own host compiles.

Convolutions on CPU. jaxlib 0.10 runs CPU convolutions, matmuls and reductions in YNNPACK, whose weight-gradient
convolutions are slower than Eigen's (BENCHMARKS.md section 1.2). With `config.cpu_convolutions="eigen"` (the
default) convolutions and their gradients go to Eigen while YNNPACK keeps matmuls and reductions (XLA's own
reductions, e.g. BatchNorm statistics, are much slower): ResNet steps are faster at every size measured
(BENCHMARKS.md section 1.3 has the figures).
"ynnpack" is jaxlib's default. The choice changes the numbers only by float32 rounding.

Recomputation on CPU. jax.checkpoint (config.remat="blocks") keeps the backward pass from reusing the forward's
activations with optimisation barriers. XLA's GPU and TPU compilers remove those barriers after scheduling; XLA:CPU
removes them before a later common-subexpression pass, which then merges most of the recomputation back into the
forward and keeps the activations after all (ResNet-10: 43 convolutions lowered, 38 compiled, the same memory).
With remat on, CPU programs therefore skip that pass (`xla_disable_hlo_passes=cse_barrier_expander`): the barriers
stay to the end, the recomputation is kept, and the CPU's memory plan shows what the accelerators' do. Same
results (tests/test_micro_batches.py).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from genscl_jax.runtime import parallel

CPU_CONVOLUTIONS = ("eigen", "ynnpack")  # config.cpu_convolutions: what model_jit_options knows

_CPU_ONE_OFF_OPTIONS = {"xla_backend_optimization_level": 0}

# Per-compile spelling of XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce: YNNPACK for
# matmuls and reductions only, so convolutions and their gradients are emitted as Eigen convolutions.
_EIGEN_CONVOLUTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
# XLA:CPU keeps jax.checkpoint's optimisation barriers to the end, so the recomputation stays (module docstring).
_KEEP_REMAT_BARRIERS = {"xla_disable_hlo_passes": "cse_barrier_expander"}


def cheap_compile_options(platform: str) -> dict[str, Any] | None:
    return dict(_CPU_ONE_OFF_OPTIONS) if platform == "cpu" else None


def compile_cheaply(fn: Callable, *args: Any, **jit_kwargs: Any):
    """jit(fn) lowered for `args` and compiled with cheap options; call the result with arrays like `args`.
    The platform is that of `out_shardings`' mesh where one is given, else the default backend's (where such a
    program runs)."""
    sharding = jit_kwargs.get("out_shardings")
    platform = parallel.mesh_platform(sharding.mesh) if hasattr(sharding, "mesh") else jax.default_backend()
    return jax.jit(fn, **jit_kwargs).lower(*args).compile(compiler_options=cheap_compile_options(platform))


def run_once(fn: Callable, *args: Any, **jit_kwargs: Any) -> Any:
    """fn(*args) through a program compiled cheaply, for work done once per run (e.g. initialisation)."""
    return compile_cheaply(fn, *args, **jit_kwargs)(*args)


def model_jit_options(config: Any, platform: str) -> dict[str, Any]:
    """Keyword arguments for jax.jit of a program that runs the network on `platform` (parallel.mesh_platform):
    on CPU, config.cpu_convolutions (where this jaxlib has YNNPACK fusions to switch convolutions away from) and,
    with config.remat on, remat's barriers kept; nothing elsewhere."""
    if platform != "cpu":
        return {}
    options = {}
    # An XLA:CPU without YNNPACK fusions already runs convolutions in Eigen.
    if config.cpu_convolutions == "eigen" and _backend_accepts_eigen_convolutions():
        options.update(_EIGEN_CONVOLUTIONS)
    if config.get("remat", "none") != "none":
        options.update(_KEEP_REMAT_BARRIERS)
    return {"compiler_options": options} if options else {}


@functools.cache
def _backend_accepts_eigen_convolutions() -> bool:
    try:
        jax.jit(jnp.negative).lower(jnp.zeros(())).compile(compiler_options=dict(_EIGEN_CONVOLUTIONS))
    except Exception:  # noqa: BLE001 - an unknown option name or value, whatever this jaxlib raises for it
        return False
    return True
