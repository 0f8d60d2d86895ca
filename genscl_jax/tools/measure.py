"""Measuring compiled programs: the XLA options a measurement compiles with, time per step, FLOPs from XLA's cost
analysis, the compiled memory plan, and the device and host memory there is.

What each figure means, and its caveats, is in the bench's docstring (genscl_jax/tools/bench.py); the step and loss
benchmarks and the scripts in benchmarks/ share these helpers.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from typing import Any, Callable, Sequence

import jax

GIB = 1024**3


def parse_compiler_options(items: Sequence[str] | None) -> dict[str, Any]:
    """--compiler-option xla_cpu_use_xnnpack=false -> {"xla_cpu_use_xnnpack": False} (per-compile options)."""
    options = {}
    for item in items or ():
        key, _, value = item.partition("=")
        lowered = value.lower()
        if lowered in ("true", "false"):
            options[key] = lowered == "true"
        else:
            try:
                options[key] = int(value)
            except ValueError:
                options[key] = value
    return options


def time_loop(run: Callable[[int], Any], *, repeats: int, steps: int) -> list[float]:
    """Seconds per step of each repeat; `run(steps)` runs that many steps and returns what to block on."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(steps))
        times.append((time.perf_counter() - start) / steps)
    return times


def median_interval(values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000,
                    seed: int = 0) -> tuple[float, float]:
    """A bootstrap percentile interval of the median of `values` (e.g. paired per-round time ratios): on a shared
    CPU the rounds scatter by several percent, so a cost of a few percent is known only to within this interval.
    Deterministic for a given seed."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = int(resamples * (1 - confidence) / 2)
    return medians[tail], medians[resamples - 1 - tail]


def compiled_flops(compiled: Any) -> float | None:
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per program
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def memory_plan(compiled: Any) -> dict[str, int] | None:
    """compiled.memory_analysis() in bytes per device: arguments, outputs, temporaries, donated aliases, and their
    total (arguments + outputs + temporaries - aliases); None where the backend gives no plan."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if m is None:
        return None
    plan = {"argument": int(m.argument_size_in_bytes), "output": int(m.output_size_in_bytes),
            "temp": int(m.temp_size_in_bytes), "alias": int(m.alias_size_in_bytes)}
    plan["total"] = plan["argument"] + plan["output"] + plan["temp"] - plan["alias"]
    return plan


def planned_bytes(compiled: Any) -> int | None:
    """Device bytes the compiled program needs: arguments + outputs + temporaries - donated aliases."""
    plan = memory_plan(compiled)
    return None if plan is None else plan["total"]


def device_peak_bytes() -> int | None:
    """Process-wide peak over local devices, where the backend keeps statistics (not on CPU)."""
    peaks = []
    for device in jax.local_devices():
        try:
            stats = device.memory_stats()
        except Exception:  # noqa: BLE001
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def device_memory_limit() -> int | None:
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return None


def host_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * GIB


def gib(num_bytes: int | None) -> float | None:
    return None if num_bytes is None else round(num_bytes / GIB, 3)
