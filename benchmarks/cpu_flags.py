"""A/B of XLA compiler options on the real pretraining step, in one process, as ratios to the default.

The step is built once (genscl_jax.tools.step_bench.StepBenchmark), compiled once per option set (per-compile options,
not XLA_FLAGS, so every variant lives in this one process), and the variants are timed in turn, round after
round with a rotating order, so that they all see the same load on a shared machine. Reported per variant:
median wall time per step, median process CPU time per step (all threads), both as ratios to the first
variant, and the loss after the warm-up step (a check that the option does not change the numbers).

    python benchmarks/cpu_flags.py --model resnet18 --width 1.0 --image-size 32 --per-device-batch 32
    python benchmarks/cpu_flags.py --variant default= --variant "eigen_convs=xla_cpu_experimental_ynn_fusion_type="

A variant is NAME=KEY=VALUE[,KEY=VALUE...] (NAME= alone: the defaults). Options that only exist as process
settings (e.g. the number of CPU devices) need separate processes: see compare_cpu.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from genscl_jax.tools import bench, environment, measure, step_bench  # noqa: E402

DEFAULT_VARIANTS = (
    "default=",
    # YNNPACK (jaxlib 0.10's default library for CPU convolutions and matmuls) off: Eigen does them.
    "eigen_all=xla_cpu_experimental_ynn_fusion_type=",
    # YNNPACK for matmuls only: convolutions (and their gradients) go to Eigen. (Per-compile options take the
    # enum name; XLA_FLAGS takes the short form: --xla_cpu_experimental_ynn_fusion_type=individual_dot.)
    "eigen_convs=xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    # What tests/conftest.py sets for every test: no LLVM/backend optimisation.
    "backend_opt_level_0=xla_backend_optimization_level=0",
)


def parse_variant(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition("=")
    options = {}
    # Items are split at commas followed by "key=", so a value may itself be a comma-separated list.
    for item in filter(None, re.split(r",(?=\w+=)", rest)) if rest else ():
        key, _, value = item.partition("=")
        options.update(measure.parse_compiler_options([f"{key}={value}"]))
    return name, options


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def time_interleaved(variants: list[dict], rounds: int, steps: int, global_batch: int) -> list[dict]:
    """Times each variant's v["run"](steps) in turn, round after round with a rotating order, and returns one row
    per variant (its other keys kept, "run", "wall" and "cpu" dropped): median wall and CPU time per step, and both
    as ratios to the first variant (of medians, and the median of the per-round paired ratios)."""
    for v in variants:
        v["wall"], v["cpu"] = [], []
    for r in range(rounds):
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:
            cpu, start = _cpu_seconds(), time.perf_counter()
            jax.block_until_ready(v["run"](steps))
            v["wall"].append((time.perf_counter() - start) / steps)
            v["cpu"].append((_cpu_seconds() - cpu) / steps)
        print(f"round {r + 1}: " + "  ".join(f"{v['name']} {1e3 * v['wall'][-1]:.0f} ms" for v in variants),
              file=sys.stderr, flush=True)
    base = variants[0]
    rows = []
    for v in variants:
        paired = [a / b for a, b in zip(v["wall"], base["wall"])]
        rows.append({**{k: x for k, x in v.items() if k not in ("run", "wall", "cpu")},
                     "step_ms": round(1e3 * statistics.median(v["wall"]), 1),
                     "images_per_s": round(global_batch / statistics.median(v["wall"]), 2),
                     "ratio": round(statistics.median(v["wall"]) / statistics.median(base["wall"]), 3),
                     "paired_ratio": round(statistics.median(paired), 3),
                     "cpu_ms": round(1e3 * statistics.median(v["cpu"]), 1),
                     "cpu_ratio": round(statistics.median(v["cpu"]) / statistics.median(base["cpu"]), 3),
                     "step_ms_rounds": [round(1e3 * t, 1) for t in v["wall"]]})
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", action="append", help="NAME=KEY=VALUE[,KEY=VALUE] (repeatable; default: a set)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=1, help="steps per variant per round")
    p.add_argument("--json", default="")
    args, bench_argv = p.parse_known_args(argv)
    bench_args = bench.parse_args(bench_argv)
    step = step_bench.StepBenchmark(bench_args)
    variants = []
    for spec in args.variant or DEFAULT_VARIANTS:
        name, options = parse_variant(spec)
        compiled, compile_s = step.compile(options)
        run = step.runner(compiled)
        _, metrics = jax.block_until_ready(run(1))
        variants.append({"name": name, "options": options, "run": run, "compile_s": round(compile_s, 2),
                         "loss_after_warmup": float(metrics["loss"])})
        print(f"compiled {name} {options} in {compile_s:.1f} s", file=sys.stderr, flush=True)
    rows = time_interleaved(variants, args.rounds, args.steps, step.global_batch)
    result = {"environment": environment.facts(), "step": step_bench.describe_step(bench_args),
              "global_batch": step.global_batch, "rounds": args.rounds, "steps_per_round": args.steps,
              "variants": rows}
    c = result["step"]
    report(f"{c['model']} x{c['width']} {c['image_size']} px {c['dtype']}, batch {step.global_batch} x "
           f"{c['num_views']} views; {args.rounds} rounds x {args.steps} steps; ratios to {rows[0]['name']}",
           result, args.json)
    return result


def report(header: str, result: dict, json_path: str) -> None:
    """Prints `header` and one line per row of result["variants"]; writes `result` to json_path if given."""
    print(header)
    for r in result["variants"]:
        print(f"  {r['name']:22s} {r['step_ms']:9.1f} ms/step  {r['images_per_s']:7.1f} img/s  ratio {r['ratio']:.3f} "
              f"(paired {r['paired_ratio']:.3f})  CPU {r['cpu_ms']:9.1f} ms (ratio {r['cpu_ratio']:.3f})  "
              f"loss {r['loss_after_warmup']:.6f}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
