"""Benchmarks: the whole GenSCL pretraining step, or the loss alone, on synthetic data.

    python -m genscl_jax.bench --model resnet50 --image-size 224 --per-device-batch 128 --dtype bfloat16 --moco
    python -m genscl_jax.bench --model resnet18 --width 0.5 --image-size 32 --per-device-batch 32
    python -m genscl_jax.bench --loss-only --anchors 1024,4096,16384 --classes 10,1000 --queue 65536
    python -m genscl_jax.bench --quick --json -          # seconds on a CPU: a smoke/regression run for CI
    python -m genscl_jax.bench --monitor-cost --model resnet50 --image-size 32 --per-device-batch 8 --steps 2
    python -m genscl_jax.bench --model resnet50 --per-device-batch 512 --micro-batch-size 32 --remat blocks --plan-only

The step is the one training runs: pretrain.build_program on a config from defaults.base_config() with
the flags below applied, jitted as the trainer jits it (parallel.jit_train_step), so this measures the product.
What it reports:
  - images/s: source images (the global batch, not views) per second; step ms: the median over repeats of the
    mean step time of `--steps` back-to-back steps, blocked on at the end; compilation is timed separately.
  - peak device memory: device.memory_stats()["peak_bytes_in_use"] where the backend reports it (GPU/TPU; a
    process-wide peak), and always the compiled program's own plan (arguments + outputs + temporaries - aliased,
    from compiled.memory_analysis()), which is what decides whether a size fits. `--plan-only` compiles the step
    for abstract state and batch shapes and reports the plan without allocating or running anything, so sizes far
    beyond this machine's memory can be planned.
  - FLOPs and MFU: FLOPs per step from XLA's cost analysis of the compiled step (compiled.cost_analysis()
    ["flops"], per device for a sharded program; it counts a multiply-add as 2 FLOPs), divided by the step
    time and by --peak-tflops (per device) when given.
  - --monitor-cost: what the online probe and the GenSCL diagnostics add to the step. The step with them
    (--monitor, training's default) and without (--no-monitor) are compiled in one process and timed in turn,
    round after round (the order alternating), so both see the same load: the ratio of the medians and the
    median of the per-round ratios, with a bootstrap 95% interval of the latter (many short rounds, e.g.
    --repeats 300 --steps 3, narrow it to about a percent on a shared CPU).

The parts: step_bench.py (the step), loss_bench.py (the loss alone), measure.py (timing, FLOPs, memory plans),
environment.py (the machine and versions recorded with every result); this module is the command line.
Only jax, flax, optax, orbax, numpy and ml_collections are imported: no TensorFlow, tfds or clu, so it runs on a
bare accelerator VM (with ml_collections' wheel carried there). The data is one batch of noise reused every step:
input work is not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from genscl_jax import models
from genscl_jax.config import recipes
from genscl_jax.models import model_builder
from genscl_jax.objectives import mixing
from genscl_jax.runtime import compile_options
from genscl_jax.tools import environment, loss_bench, measure, step_bench
from genscl_jax.training import optimizers


def _human_stream(args: argparse.Namespace):
    return sys.stderr if args.json == "-" else sys.stdout


def _step_title(r: dict[str, Any]) -> str:
    c = r["config"]
    micro = f" micro-batch {c['micro_batch_size']}/device" if c["micro_batch_size"] else ""
    remat = f" remat={c['remat']}" if c["remat"] != "none" else ""
    return (f"step: {c['model']} x{c['width']} {c['image_size']}px {c['dtype']} global batch {r['global_batch']} "
            f"x {c['num_views']} views{micro}{remat}, moco={c['moco']} teacher={c['teacher']} mix={c['mix']} "
            f"({r['num_params']:,} params)")


def _plan_lines(r: dict[str, Any]) -> list[str]:
    plan = r["memory_plan"] or {}
    parts = "   ".join(f"{k} {measure.gib(plan[k])}" for k in ("argument", "output", "temp", "alias") if k in plan)
    return [_step_title(r), f"  memory plan per device: {measure.gib(r['planned_bytes'])} GiB ({parts} GiB; "
                            f"compiled.memory_analysis)   compile s {r['compile_s']:.1f}   --plan-only: not run"]


def _step_lines(r: dict[str, Any]) -> list[str]:
    if r["mode"] == "step_plan":
        return _plan_lines(r)
    peak = measure.gib(r["peak_device_bytes"])
    lines = [
        _step_title(r),
        f"  images/s {r['images_per_s']:.1f}   step ms {r['step_ms']:.2f} (median of {len(r['step_ms_repeats'])} "
        f"repeats: {r['step_ms_repeats']})   compile s {r['compile_s']:.1f}",
        f"  memory: planned {measure.gib(r['planned_bytes'])} GiB (compiled.memory_analysis)   device peak "
        f"{'n/a on this backend' if peak is None else f'{peak} GiB'}",
    ]
    if r["flops_per_step"]:
        mfu = f"   MFU {100 * r['mfu']:.3g}% of {r['peak_tflops']} TFLOP/s" if r["mfu"] is not None else \
            "   MFU: pass --peak-tflops"
        lines.append(f"  {r['flops_per_step'] / 1e9:.2f} GFLOP/step ({r['flops_source']}) -> "
                     f"{r['tflops_per_s']:.4f} TFLOP/s{mfu}")
    return lines


def _loss_line(case: dict[str, Any]) -> str:
    head = (f"loss {case['impl']:7s} N={case['anchors']:6d} M={case['contrasts']:6d} C={case['classes']:5d}: "
            f"planned {case['planned_gib']} GiB (fits {case['memory_budget_gib']} GiB: {case['fits_budget']})")
    if case.get("flops"):
        head += f"   {case['flops'] / 1e9:.0f} GFLOP"
    if "skipped" in case:
        return f"{head}   skipped: {case['skipped']}"
    peak = measure.gib(case["peak_device_bytes"])
    return f"{head}   {case['ms']:.2f} ms fwd+bwd   device peak {'n/a' if peak is None else f'{peak} GiB'}"




def _monitor_cost_lines(r: dict[str, Any]) -> list[str]:
    c = r["config"]
    return [f"monitor cost: {c['model']} x{c['width']} {c['image_size']}px {c['dtype']} global batch "
            f"{r['global_batch']} x {c['num_views']} views, moco={c['moco']}, {r['rounds']} rounds x "
            f"{r['steps_per_round']} steps",
            f"  step ms with probe + diagnostics {r['on']['step_ms']:.2f}, without {r['off']['step_ms']:.2f}: "
            f"ratio {r['ratio_of_medians']:.4f} (median paired {r['median_paired_ratio']:.4f}, 95% interval "
            f"{r['median_paired_ratio_95ci'][0]:.4f}-{r['median_paired_ratio_95ci'][1]:.4f}; CPU time "
            f"{r['cpu_time_ratio']:.4f}, XLA FLOPs {r['flops_ratio']})"]


# --quick: the project's tiny network (recipes.TINY_NETWORK) at 16 px, a few steps.
QUICK = dict(model=recipes.TINY_NETWORK["model"], width=recipes.TINY_NETWORK["width_multiplier"],
             stem=recipes.TINY_NETWORK["stem"], head_dim=recipes.TINY_NETWORK["head.output_dim"],
             head_hidden_dim=recipes.TINY_NETWORK["head.hidden_dim"], image_size=16, per_device_batch=8,
             queue_size=64, warmup=2, steps=10, repeats=5, anchors="64,256", classes="10", queue=512, loss_steps=2)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m genscl_jax.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes that run in seconds on a CPU (CI regression run; reports, asserts nothing)")
    p.add_argument("--loss-only", action="store_true", help="time the loss alone (forward + backward)")
    p.add_argument("--monitor-cost", action="store_true",
                   help="time the step with and without the online probe and diagnostics, interleaved")
    p.add_argument("--json", default="", help="also write the results as JSON to this path ('-': stdout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    p.add_argument("--compiler-option", action="append", default=[], metavar="KEY=VALUE",
                   help="XLA option for this compile only, e.g. xla_cpu_experimental_ynn_fusion_type= (repeatable)")
    _add_step_flags(p.add_argument_group("step"))
    _add_loss_flags(p.add_argument_group("loss only"))
    args = p.parse_args(argv)
    if args.quick:
        given = sys.argv[1:] if argv is None else argv
        explicit = {a.lstrip("-").split("=")[0].replace("-", "_") for a in given if a.startswith("--")}
        for key, value in QUICK.items():
            if key not in explicit:
                setattr(args, key, value)
    for impl in loss_bench.csv_values(args.loss_impl, str):
        if impl not in loss_bench.LOSS_IMPLS:
            p.error(f"--loss-impl: {impl!r} is not one of {loss_bench.LOSS_IMPLS}")
    return args


def _add_step_flags(g: Any) -> None:  # an argparse argument group
    g.add_argument("--model", default="resnet50", choices=models.MODEL_NAMES)
    g.add_argument("--width", type=float, default=1.0, help="width multiplier")
    g.add_argument("--stem", default="auto", choices=model_builder.STEMS, help="auto: cifar below 64 px")
    g.add_argument("--image-size", type=int, default=224)
    g.add_argument("--per-device-batch", type=int, default=64, help="source images per device (views not counted)")
    g.add_argument("--channels", type=int, default=3, help="image channels (1: Fashion-MNIST, the quickstart)")
    g.add_argument("--num-views", type=int, default=2)
    g.add_argument("--num-classes", type=int, default=0, help="0: 10 below 64 px, else 1000")
    g.add_argument("--dtype", default="float32", choices=model_builder.DTYPES)
    g.add_argument("--moco", action=argparse.BooleanOptionalAction, default=False,
                   help="EMA key encoder + labelled key queue")
    g.add_argument("--queue-size", type=int, default=8192)
    g.add_argument("--teacher", default="none", choices=("none",) + models.MODEL_NAMES,
                   help="a ResNet with random weights, e.g. resnet50")
    g.add_argument("--teacher-width", type=float, default=1.0)
    g.add_argument("--teacher-dtype", default="", help="default: --dtype")
    g.add_argument("--kd-alpha", type=float, default=1.0, help="weight of the teacher term when --teacher is set")
    g.add_argument("--mix", default="none", choices=mixing.MIX_KINDS)
    g.add_argument("--micro-batch-size", type=int, default=0,
                   help="source images per micro-batch PER DEVICE (config.micro_batch_size = this x devices); 0: "
                        "the dense step")
    g.add_argument("--bn-group-size", type=int, default=0,
                   help="dense step: BatchNorm groups of this many source images per device (config.bn_group_size)")
    g.add_argument("--remat", default="none", choices=models.REMAT, help="config.remat")
    g.add_argument("--loss-block-size", type=int, default=0,
                   help="config.loss_block_size: the step's loss in blocks of this many anchor rows (0: dense)")
    g.add_argument("--cpu-convolutions", default="eigen", choices=compile_options.CPU_CONVOLUTIONS,
                   help="CPU only: config.cpu_convolutions (what training uses; --compiler-option overrides)")
    g.add_argument("--color-augment", action="store_true",
                   help="simclr's colour jitter, grayscale and (at 64 px and more) blur on the device, in the step")
    g.add_argument("--input", default="noise", choices=("noise", "jpeg"),
                   help="noise: one batch reused (the device alone); jpeg: every step a batch from the product's "
                        "tf.data pipeline over synthetic JPEGs (needs TensorFlow; genscl_jax/tools/pipeline_bench.py)")
    g.add_argument("--input-images", type=int, default=512, help="--input jpeg: synthetic 375x500 JPEGs to write")
    g.add_argument("--input-dir", default="", help="--input jpeg: their image folder (default: under the temp dir)")
    g.add_argument("--monitor", action=argparse.BooleanOptionalAction, default=True,
                   help="the online linear probe and the GenSCL diagnostics in the step (training's default)")
    g.add_argument("--optimizer", default="sgd", choices=optimizers.OPTIMIZERS)
    g.add_argument("--learning-rate", type=float, default=0.1)
    g.add_argument("--head-dim", type=int, default=128, help="projection output dim (also the loss-only D)")
    g.add_argument("--head-hidden-dim", type=int, default=0, help="0: the encoder's feature dim")
    g.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    g.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    g.add_argument("--peak-tflops", type=float, default=0.0, help="per-device peak TFLOP/s for MFU (0: no MFU)")


def _add_loss_flags(g: Any) -> None:  # an argparse argument group
    g.add_argument("--anchors", default="1024,4096,16384", help="comma-separated anchor counts N")
    g.add_argument("--classes", default="10,1000", help="comma-separated label dims C")
    g.add_argument("--queue", type=int, default=65536, help="queue keys; contrasts M = N + queue (0: all-vs-all)")
    g.add_argument("--loss-impl", default="dense", help="dense | chunked | dense,chunked")
    g.add_argument("--loss-block", type=int, default=1024, help="anchor rows per block of the chunked loss")
    g.add_argument("--loss-steps", type=int, default=5, help="calls per timed repeat")
    g.add_argument("--plan-only", action="store_true",
                   help="compile and report planned memory, do not run (the step: for abstract inputs)")
    g.add_argument("--memory-budget-gb", type=float, default=8.0, help="report whether each size fits this")
    g.add_argument("--host-memory-fraction", type=float, default=0.5,
                   help="on backends without a memory limit (CPU), skip sizes planned above this share of RAM")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = _human_stream(args)
    env = environment.facts()
    print(environment.bench_line(env), file=out, flush=True)
    results: dict[str, Any] = {"environment": env, "argv": list(argv if argv is not None else sys.argv[1:])}
    if args.loss_only:
        results["loss"] = loss_bench.bench_loss(args, report=lambda case: print(_loss_line(case), file=out, flush=True))
    elif args.input == "jpeg":
        from genscl_jax.tools import pipeline_bench  # TensorFlow, only in this mode

        results["pipeline_step"] = pipeline_bench.bench_pipeline_step(args, step_bench.StepBenchmark)
        print("\n".join(pipeline_bench.lines(results["pipeline_step"])), file=out, flush=True)
    elif args.monitor_cost:
        results["monitor_cost"] = step_bench.bench_monitor_cost(args)
        print("\n".join(_monitor_cost_lines(results["monitor_cost"])), file=out, flush=True)
    else:
        results["step"] = step_bench.bench_step(args)
        print("\n".join(_step_lines(results["step"])), file=out, flush=True)
    if args.json:
        text = json.dumps(results, indent=1, default=str)
        if args.json == "-":
            print(text, flush=True)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return results


if __name__ == "__main__":
    main()
