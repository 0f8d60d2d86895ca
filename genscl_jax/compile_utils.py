"""Compilation helpers.

XLA's CPU backend spends most of its compile time optimising random-number code (threefry), which dominates
one-off programs such as parameter initialisation: a tiny ResNet-18's init took ~25 s to compile at full
optimisation and ~3 s without backend optimisation on a 2-core CPU. Programs that run once (or are trivially
cheap) are therefore compiled without backend optimisation on CPU; accelerators keep their defaults.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

_CPU_ONE_OFF_OPTIONS = {"xla_backend_optimization_level": 0}


def cheap_compile_options() -> dict[str, Any] | None:
    return dict(_CPU_ONE_OFF_OPTIONS) if jax.default_backend() == "cpu" else None


def compile_cheaply(fn: Callable, *args: Any, **jit_kwargs: Any):
    """jit(fn) lowered for `args` and compiled with cheap options; call the result with arrays like `args`."""
    return jax.jit(fn, **jit_kwargs).lower(*args).compile(compiler_options=cheap_compile_options())


def run_once(fn: Callable, *args: Any, **jit_kwargs: Any) -> Any:
    """fn(*args) through a program compiled cheaply, for work done once per run (e.g. initialisation)."""
    return compile_cheaply(fn, *args, **jit_kwargs)(*args)
