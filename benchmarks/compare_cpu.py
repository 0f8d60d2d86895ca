"""Compares training-step speed of several set-ups on this machine as ratios measured in one run.

Each variant is a worker process (JAX: genscl_jax.tools.step_bench's step; PyTorch: torch_reference_step.py) that
sets up, compiles and warms up, then waits. The driver then asks the workers in turn, round after round (rotating the
order), to run a few steps; only one worker computes at any time, so all of them see the same machine load,
which matters on a small shared CPU. Reported: each variant's median step time and its ratio to the first
variant (the ratio of medians and the median of the per-round ratios), and the process CPU time per step
(all threads), which other users' load changes much less than wall time.

    python benchmarks/compare_cpu.py                                   # JAX vs PyTorch, ResNet-18 x0.5, 32 px, batch 32
    python benchmarks/compare_cpu.py --jax default --jax "ynnpack|--cpu-convolutions=ynnpack"  # default = as trained
    python benchmarks/compare_cpu.py --jax default --jax "bf16|--dtype=bfloat16" \\
        --torch torch --torch "cl|--channels-last"

A variant is NAME, then '|'-separated items: an item starting with "--" is an extra argument of the worker
(genscl_jax.tools.bench's or torch_reference_step.py's), any other item is an environment variable NAME=VALUE
(XLA_FLAGS is appended to the inherited value).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ------------------------------------------------------------------------------------------------- workers


def _serve(run, info: dict) -> None:
    """READY line, then answer 'RUN n' with the seconds per step of n steps; 'QUIT' (or EOF) ends."""
    print("READY " + json.dumps(info), flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "QUIT":
            break
        n = int(command[1])
        cpu_start, start = _cpu_seconds(), time.perf_counter()
        run(n)
        wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        print("TIME " + json.dumps({"step_s": wall / n, "cpu_s": cpu / n}), flush=True)


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads: the work done, whatever the other load."""
    t = os.times()
    return t.user + t.system


def jax_worker(argv: list[str], warmup: int) -> None:
    sys.path.insert(0, ROOT)
    import jax

    from genscl_jax.tools import bench, measure, step_bench

    args = bench.parse_args(argv)
    step = step_bench.StepBenchmark(args)
    options = step.training_compiler_options(measure.parse_compiler_options(args.compiler_option))
    compiled, compile_s = step.compile(options)
    run = step.runner(compiled)
    _, metrics = jax.block_until_ready(run(warmup))
    info = {"framework": "jax", "jax": jax.__version__, "compile_s": round(compile_s, 2),
            "loss_after_warmup": float(metrics["loss"]),
            "global_batch": step.global_batch, "num_params": step.num_params,
            "flops_per_step": measure.compiled_flops(compiled), "xla_flags": os.environ.get("XLA_FLAGS", "")}
    _serve(lambda n: jax.block_until_ready(run(n)), info)


def torch_worker(argv: list[str], warmup: int) -> None:
    sys.path.insert(0, HERE)
    import torch

    import torch_reference_step as ref

    p = argparse.ArgumentParser()
    ref.add_arguments(p)
    args = p.parse_args(argv)
    step = ref.build(args)
    loss = step.run(warmup)
    info = {"framework": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "loss_after_warmup": loss,
            "global_batch": step.batch, "num_params": step.num_params}
    _serve(step.run, info)


# -------------------------------------------------------------------------------------------------- driver


class Variant:
    def __init__(self, framework: str, spec: str, shape_args: list[str]):
        name, *items = spec.split("|")
        self.name, self.framework = name, framework
        self.extra_args = [i for i in items if i.startswith("--")]
        self.env = dict(os.environ)
        for item in items:
            if item.startswith("--") or not item:
                continue
            key, _, value = item.partition("=")
            self.env[key] = (self.env.get(key, "") + " " + value).strip() if key == "XLA_FLAGS" else value
        self.argv = shape_args + self.extra_args
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.info: dict = {}
        self.proc: subprocess.Popen | None = None

    def start(self, warmup: int) -> None:
        command = [sys.executable, os.path.abspath(__file__), "--worker", self.framework, "--warmup", str(warmup),
                   "--", *self.argv]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=self.env,
                                     cwd=ROOT)
        self.info = json.loads(self._expect("READY"))

    def run(self, steps: int) -> float:
        self.proc.stdin.write(f"RUN {steps}\n")
        self.proc.stdin.flush()
        reply = json.loads(self._expect("TIME"))
        self.times.append(reply["step_s"])
        self.cpu_times.append(reply["cpu_s"])
        return reply["step_s"]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.write("QUIT\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
            self.proc.wait(timeout=60)

    def _expect(self, tag: str) -> str:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.name} ended (exit {self.proc.wait()}) before {tag}")
            if line.startswith(tag + " "):
                return line[len(tag) + 1:]


def jax_shape_args(a: argparse.Namespace) -> list[str]:
    return ["--model", a.model, "--width", str(a.width), "--stem", a.stem, "--image-size", str(a.image_size),
            "--per-device-batch", str(a.batch), "--num-classes", str(a.num_classes)]


def torch_shape_args(a: argparse.Namespace) -> list[str]:
    return ["--model", a.model, "--width", str(a.width), "--stem", a.stem, "--image-size", str(a.image_size),
            "--batch", str(a.batch), "--num-classes", str(a.num_classes)]


def compare(a: argparse.Namespace) -> dict:
    variants = [Variant("jax", s, jax_shape_args(a)) for s in a.jax or []] + \
               [Variant("torch", s, torch_shape_args(a)) for s in a.torch or []]
    if not variants:
        variants = [Variant("jax", "jax", jax_shape_args(a)), Variant("torch", "torch", torch_shape_args(a))]
    try:
        for v in variants:
            v.start(a.warmup)
            print(f"ready: {v.name} {v.info}", file=sys.stderr, flush=True)
        for r in range(a.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                v.run(a.steps)
            print(f"round {r + 1}/{a.rounds}: " + "  ".join(f"{v.name} {1e3 * v.times[-1]:.1f} ms" for v in variants),
                  file=sys.stderr, flush=True)
    finally:
        for v in variants:
            v.stop()
    base = variants[0]
    rows = []
    for v in variants:
        median = statistics.median(v.times)
        paired = [t / b for t, b in zip(v.times, base.times)]
        rows.append({"name": v.name, "framework": v.framework, "args": v.extra_args,
                     "xla_flags": v.info.get("xla_flags"), "step_ms": round(1e3 * median, 2),
                     "images_per_s": round(a.batch / median, 2),
                     "ratio_to_first": round(median / statistics.median(base.times), 3),
                     "median_paired_ratio": round(statistics.median(paired), 3),
                     "cpu_ms": round(1e3 * statistics.median(v.cpu_times), 2),
                     "cpu_ratio_to_first": round(statistics.median(v.cpu_times) / statistics.median(base.cpu_times), 3),
                     "step_ms_rounds": [round(1e3 * t, 1) for t in v.times], "info": v.info})
    shape = {"model": a.model, "width": a.width, "stem": a.stem, "image_size": a.image_size, "batch": a.batch,
             "num_views": 2}
    return {"shape": shape, "rounds": a.rounds, "steps_per_round": a.steps, "results": rows}


def main(argv=None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--stem", default="cifar")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32, help="source images per step (two views each)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="steps per worker per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--jax", action="append", help="a JAX variant: NAME[|--bench-arg|ENV=VALUE...] (repeatable)")
    p.add_argument("--torch", action="append", help="a PyTorch variant: NAME[|--arg|ENV=VALUE...] (repeatable)")
    p.add_argument("--json", default="", help="write the results as JSON here")
    a, rest = p.parse_known_args(argv)
    if a.worker:
        worker_argv = rest[1:] if rest[:1] == ["--"] else rest
        (jax_worker if a.worker == "jax" else torch_worker)(worker_argv, a.warmup)
        return None
    if rest:
        p.error(f"unrecognised arguments: {rest}")
    result = compare(a)
    width = max(len(r["name"]) for r in result["results"])
    s = result["shape"]
    print(f"{s['model']} x{s['width']} {s['stem']} stem, {s['image_size']} px, batch {s['batch']} x 2 views; "
          f"{a.rounds} rounds x {a.steps} steps, medians; ratio = step time / {result['results'][0]['name']}'s")
    for r in result["results"]:
        print(f"  {r['name']:{width}s}  {r['step_ms']:9.1f} ms/step  {r['images_per_s']:8.1f} img/s  "
              f"ratio {r['ratio_to_first']:.3f} (paired {r['median_paired_ratio']:.3f})   "
              f"CPU {r['cpu_ms']:9.1f} ms/step (ratio {r['cpu_ratio_to_first']:.3f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
