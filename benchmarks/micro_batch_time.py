"""Step time of the micro-batched pretraining step against the dense one at the same batch, in one interleaved run
(BENCHMARKS.md, "Memory-bounded step").

    python benchmarks/micro_batch_time.py --micro 16 --model resnet18 --image-size 32 --per-device-batch 64

Variants, each the product's step (genscl_jax.tools.step_bench.StepBenchmark) with the bench flags given plus:
dense (today's step), dense_ghost_bn (BatchNorm groups of --micro images: the function the micro-batched step
computes), micro (--micro-batch-size), micro_remat (and --remat blocks), and with --lax-gradients also
micro_lax_gradients: the micro-batched step with JAX's own convolution gradients instead of models/convolution.py's
canonical ones (what XLA:CPU runs inside the micro-batch loop without it). They are timed in turn, round after
round with a rotating order (cpu_flags.time_interleaved), so all see the same load; ratios are to dense. The loss
after the warm-up step is printed: every variant but dense should agree.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import contextlib  # noqa: E402

import jax  # noqa: E402
from cpu_flags import report, time_interleaved  # noqa: E402
from jax import lax  # noqa: E402

from genscl_jax.models import resnet  # noqa: E402
from genscl_jax.tools import bench, environment, step_bench  # noqa: E402


def variant_flags(micro: int) -> dict[str, list[str]]:
    return {"dense": [], "dense_ghost_bn": ["--bn-group-size", str(micro)],
            "micro": ["--micro-batch-size", str(micro)],
            "micro_remat": ["--micro-batch-size", str(micro), "--remat", "blocks"]}


@contextlib.contextmanager
def lax_convolution_gradients():
    """While a step is built (traced), its ResNet convolutions use lax.conv_general_dilated's own gradients."""
    canonical = resnet.canonical_gradient_conv
    resnet.canonical_gradient_conv = lax.conv_general_dilated
    try:
        yield
    finally:
        resnet.canonical_gradient_conv = canonical


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--micro", type=int, required=True, help="source images per micro-batch per device")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=1, help="steps per variant per round")
    p.add_argument("--lax-gradients", action="store_true", help="also time micro_lax_gradients")
    p.add_argument("--json", default="")
    args, bench_argv = p.parse_known_args(argv)
    variants, global_batch = [], 0
    flags_of = variant_flags(args.micro)
    if args.lax_gradients:
        flags_of["micro_lax_gradients"] = flags_of["micro"]
    for name, flags in flags_of.items():
        with lax_convolution_gradients() if name == "micro_lax_gradients" else contextlib.nullcontext():
            step = step_bench.StepBenchmark(bench.parse_args(bench_argv + flags))
        compiled, compile_s = step.compile(step.training_compiler_options())
        run = step.runner(compiled)
        _, metrics = jax.block_until_ready(run(1))
        variants.append({"name": name, "flags": flags, "run": run, "compile_s": round(compile_s, 2),
                         "loss_after_warmup": float(metrics["loss"])})
        global_batch = step.global_batch
        print(f"compiled {name} in {compile_s:.1f} s", file=sys.stderr, flush=True)
    rows = time_interleaved(variants, args.rounds, args.steps, global_batch)
    result = {"environment": environment.facts(), "step": step_bench.describe_step(bench.parse_args(bench_argv)),
              "global_batch": global_batch, "micro_batch_per_device": args.micro, "rounds": args.rounds,
              "steps_per_round": args.steps, "variants": rows}
    c = result["step"]
    report(f"{c['model']} x{c['width']} {c['image_size']} px {c['dtype']}, batch {global_batch} x {c['num_views']} "
           f"views, micro-batches of {args.micro}; {args.rounds} rounds x {args.steps} steps; ratios to dense",
           result, args.json)
    return result


if __name__ == "__main__":
    main()
