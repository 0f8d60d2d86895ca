"""The training-step benchmark: the product's pretraining step (pretrain.build_program on a config from
defaults.base_config() with the bench's flags applied), built for synthetic shapes, compiled as the trainer compiles
it, and timed (`bench_step`), planned without running (`plan_step`, --plan-only), or timed with and without the
online probe and the diagnostics (`bench_monitor_cost`).

The batch is one batch of noise reused every step: input work is not timed (pipeline_bench.py times it). JAX,
flax, optax and ml_collections only: no TensorFlow.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from genscl_jax import data
from genscl_jax.config import defaults
from genscl_jax.data import device_preprocess, registry, views
from genscl_jax.runtime import compile_options, parallel
from genscl_jax.tools import measure
from genscl_jax.trainers import pretrain, teachers


def step_config(args: argparse.Namespace, num_devices: int):
    """The training config (defaults.base_config) this benchmark's step is built from."""
    config = defaults.base_config()
    for key, value in dict(
            model=args.model, stem=args.stem, image_size=args.image_size, width_multiplier=args.width,
            dtype=args.dtype, cpu_convolutions=args.cpu_convolutions, num_views=args.num_views,
            batch_size=args.per_device_batch * num_devices, num_train_steps=100_000, optimizer=args.optimizer,
            micro_batch_size=args.micro_batch_size * num_devices, bn_group_size=args.bn_group_size * num_devices,
            remat=args.remat, loss_block_size=args.loss_block_size,
            learning_rate=args.learning_rate, warmup_epochs=0.0, seed=args.seed, mix={"kind": args.mix},
            device_color_augment=args.color_augment, augment="simclr",
            head={"hidden_dim": args.head_hidden_dim, "output_dim": args.head_dim},
            moco={"enabled": args.moco, "queue_size": args.queue_size},
            online_probe={"enabled": args.monitor}, diagnostics=args.monitor,
            kd={"alpha": args.kd_alpha if args.teacher != "none" else 0.0, "teacher": "random weights",
                "teacher_model": args.teacher if args.teacher != "none" else "resnet50",
                "teacher_width_multiplier": args.teacher_width,
                "teacher_dtype": args.teacher_dtype or args.dtype}).items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def num_classes_for(args: argparse.Namespace) -> int:
    if args.num_classes:
        return args.num_classes
    return 1000 if args.image_size >= 64 else 10


class StepBenchmark:
    """The product's pretraining step (pretrain.build_program) for `args`, lowered once; `compile(options)` gives
    callables sharing its inputs. abstract=True: state, batch and teacher are shapes only (nothing is allocated),
    for compiling a memory plan; such a benchmark cannot run."""

    def __init__(self, args: argparse.Namespace, mesh=None,
                 preprocessing: device_preprocess.Preprocessing | None = None, *, abstract: bool = False):
        self.args = args
        self.mesh = mesh or parallel.create_mesh()
        self.num_devices = self.mesh.devices.size
        self.global_batch = args.per_device_batch * self.num_devices
        self.num_classes = num_classes_for(args)
        self.config = step_config(args, self.num_devices)
        channels = args.channels
        spec = data.DatasetInfo(self.num_classes, 1_281_167, 50_000, channels, (0.5,) * channels, (0.25,) * channels)
        t0 = time.perf_counter()
        teacher = self._random_teacher(channels, abstract) if args.teacher != "none" else None
        self.program = pretrain.build_program(self.config, self.mesh, spec, spec.num_train // self.global_batch,
                                              preprocessing=preprocessing or step_preprocessing(args, spec),
                                              teacher=teacher)
        self.teacher_variables = teacher.variables if teacher else None
        if abstract:
            self.initial_state = self.program.state_shapes()
            self.batch = abstract_batch(self.global_batch, args.num_views, args.image_size, channels)
        else:
            self.initial_state = self.program.init_state()
            self.batch = random_batch(args.seed, self.global_batch, args.num_views, args.image_size, channels,
                                      self.num_classes, self.mesh)
            jax.block_until_ready((self.initial_state, self.batch, self.teacher_variables))
        self.init_seconds = time.perf_counter() - t0
        self.num_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.initial_state.params))
        t0 = time.perf_counter()
        # Lowered without compiler options: each compile() below chooses them (training's, plus any extra).
        self.lowered = self.program.jit({}).lower(self.initial_state, self.batch, self.teacher_variables)
        self.lower_seconds = time.perf_counter() - t0

    def _random_teacher(self, channels: int, abstract: bool) -> teachers.Teacher:
        return random_teacher(self.config, self.num_classes, channels, self.mesh, abstract=abstract)

    def training_compiler_options(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """What the trainer compiles this step with (compile_options: the CPU convolution library), then `extra`."""
        return {**(self.program.compiler_options or {}), **(extra or {})}

    def compile(self, compiler_options: dict[str, Any] | None = None):
        t0 = time.perf_counter()
        compiled = self.lowered.compile(compiler_options=compiler_options or None)
        return compiled, time.perf_counter() - t0

    def fresh_state(self):
        """A copy of the initial state, laid out like it (each compiled variant donates, i.e. consumes, its own)."""
        copy = jax.jit(lambda tree: jax.tree_util.tree_map(jnp.copy, tree),
                       out_shardings=parallel.replicated(self.mesh))
        return copy(self.initial_state)

    def runner(self, compiled) -> Callable[[int], Any]:
        """run(n): n back-to-back steps continuing from this runner's own state; returns what to block on."""
        holder = {"state": self.fresh_state()}
        batch, teacher_variables = self.batch, self.teacher_variables

        def run(num_steps: int):
            state, metrics = holder["state"], None
            for _ in range(num_steps):
                state, metrics = compiled(state, batch, teacher_variables)
            holder["state"] = state
            return state, metrics

        run.holder = holder  # type: ignore[attr-defined]
        return run


def random_teacher(config: Any, num_classes: int, channels: int, mesh, *, abstract: bool) -> teachers.Teacher:
    """The teacher config.kd names, with random weights (its cost does not depend on them); abstract: shapes only,
    for compiling without devices (the plan command)."""
    module = teachers.teacher_module(config, num_classes)
    sample = jnp.zeros((1, config.image_size, config.image_size, channels), jnp.float32)
    init = lambda rng: module.init(rng, sample, train=False)  # noqa: E731
    rng = jax.random.PRNGKey(config.seed + 1)
    if abstract:
        return teachers.Teacher(module, jax.eval_shape(init, rng))
    variables = compile_options.run_once(init, rng, out_shardings=parallel.replicated(mesh))
    return teachers.Teacher(module, variables)


def step_preprocessing(args: argparse.Namespace, spec: data.DatasetInfo) -> device_preprocess.Preprocessing:
    """What the step does to its uint8 views, as for the dataset this shape stands for: ImageNet at 64 px and more
    (with --color-augment: colour jitter, grayscale and blur on the device), CIFAR below (no blur)."""
    entry = registry.get("imagenet2012" if args.image_size >= 64 else "cifar10")
    plan = views.resolve("simclr", entry, image_size=args.image_size, device_color_augment=args.color_augment)
    return device_preprocess.for_plan(plan, spec)


def random_batch(seed: int, global_batch: int, num_views: int, image_size: int, channels: int, num_classes: int,
                 mesh) -> dict[str, jax.Array]:
    """One global batch {"image": [B, V, H, W, C] uint8, "label": [B] int32} of noise, each process making its
    share on the host and placing it as the input pipeline does (parallel.global_batch_from_local).

    The step's cost does not depend on pixel values, and this costs no compilation (synthetic.py's generator
    compiles a template resize that takes seconds on a small CPU).
    """
    local = global_batch // jax.process_count()
    rng = np.random.default_rng(seed + jax.process_index())
    images = rng.integers(0, 256, (local, num_views, image_size, image_size, channels), dtype=np.uint8)
    labels = rng.integers(0, num_classes, (local,), dtype=np.int32)
    return parallel.global_batch_from_local({"image": images, "label": labels}, mesh)


def abstract_batch(global_batch: int, num_views: int, image_size: int, channels: int) -> dict[str, Any]:
    """The shapes of random_batch's batch, for compiling without data."""
    return {"image": jax.ShapeDtypeStruct((global_batch, num_views, image_size, image_size, channels), jnp.uint8),
            "label": jax.ShapeDtypeStruct((global_batch,), jnp.int32)}


def describe_step(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in (
        "model", "width", "stem", "image_size", "channels", "per_device_batch", "num_views", "dtype", "moco",
        "queue_size", "teacher", "teacher_width", "mix", "optimizer", "color_augment", "head_dim", "cpu_convolutions",
        "monitor", "micro_batch_size", "bn_group_size", "remat", "loss_block_size")}


def plan_step(args: argparse.Namespace) -> dict[str, Any]:
    """--plan-only: the step compiled for abstract inputs; its memory plan and FLOPs, nothing allocated or run."""
    bench = StepBenchmark(args, abstract=True)
    options = bench.training_compiler_options(measure.parse_compiler_options(args.compiler_option))
    compiled, compile_seconds = bench.compile(options)
    plan = measure.memory_plan(compiled)
    return {"mode": "step_plan", "config": describe_step(args), "num_classes": bench.num_classes,
            "num_devices": bench.num_devices, "global_batch": bench.global_batch, "num_params": bench.num_params,
            "lower_s": round(bench.lower_seconds, 3), "compile_s": round(compile_seconds, 3),
            "planned_bytes": None if plan is None else plan["total"], "memory_plan": plan,
            "flops_per_step": measure.compiled_flops(compiled), "compiler_options": options}


def bench_step(args: argparse.Namespace) -> dict[str, Any]:
    if args.plan_only:
        return plan_step(args)
    bench = StepBenchmark(args)
    options = bench.training_compiler_options(measure.parse_compiler_options(args.compiler_option))
    compiled, compile_seconds = bench.compile(options)
    run = bench.runner(compiled)
    state, metrics = jax.block_until_ready(run(max(args.warmup, 1)))
    loss = float(jax.device_get(metrics["loss"]))
    times = measure.time_loop(run, repeats=args.repeats, steps=args.steps)
    step_s = statistics.median(times)
    flops = measure.compiled_flops(compiled)
    result = {
        "mode": "step",
        "config": describe_step(args),
        "num_classes": bench.num_classes,
        "global_batch": bench.global_batch,
        "num_params": bench.num_params,
        "init_s": round(bench.init_seconds, 3),
        "lower_s": round(bench.lower_seconds, 3),
        "compile_s": round(compile_seconds, 3),
        "step_ms": round(step_s * 1e3, 3),
        "step_ms_repeats": [round(t * 1e3, 3) for t in times],
        "images_per_s": round(bench.global_batch / step_s, 2),
        "views_per_s": round(bench.global_batch * args.num_views / step_s, 2),
        "loss_after_warmup": loss,
        "peak_device_bytes": measure.device_peak_bytes(),
        "planned_bytes": measure.planned_bytes(compiled),
        "flops_per_step": flops,
        "flops_source": "compiled.cost_analysis()['flops'] (XLA HLO cost analysis, per device)" if flops else None,
        "tflops_per_s": round(flops / step_s / 1e12, 4) if flops else None,
        "peak_tflops": args.peak_tflops,
        "mfu": round(flops / step_s / (args.peak_tflops * 1e12), 4) if flops and args.peak_tflops else None,
        "compiler_options": options,
    }
    if not np.isfinite(loss):
        result["warning"] = "non-finite loss"
    return result


def bench_monitor_cost(args: argparse.Namespace) -> dict[str, Any]:
    """The step with and without the online probe and the diagnostics, interleaved round by round."""
    runs = {}
    for monitor in (True, False):
        variant = argparse.Namespace(**{**vars(args), "monitor": monitor})
        bench = StepBenchmark(variant)
        compiled, compile_seconds = bench.compile(bench.training_compiler_options(
            measure.parse_compiler_options(args.compiler_option)))
        run = bench.runner(compiled)
        _, metrics = jax.block_until_ready(run(max(args.warmup, 1)))
        runs["on" if monitor else "off"] = {"run": run, "compile_s": round(compile_seconds, 3), "times": [],
                                            "cpu_times": [], "flops": measure.compiled_flops(compiled),
                                            "loss_after_warmup": float(jax.device_get(metrics["loss"]))}
    for round_index in range(args.repeats):
        for name in (("on", "off") if round_index % 2 == 0 else ("off", "on")):
            cpu_start = time.process_time()
            runs[name]["times"] += measure.time_loop(runs[name]["run"], repeats=1, steps=args.steps)
            runs[name]["cpu_times"].append((time.process_time() - cpu_start) / args.steps)
    on, off = runs["on"], runs["off"]
    paired = [a / b for a, b in zip(on["times"], off["times"])]
    result = {"mode": "monitor_cost", "config": describe_step(args), "global_batch": bench.global_batch,
              "rounds": args.repeats, "steps_per_round": args.steps,
              "ratio_of_medians": _ratio(statistics.median(on["times"]), statistics.median(off["times"])),
              "median_paired_ratio": round(statistics.median(paired), 4),
              # How far the paired median is known: the rounds scatter by several percent on a shared CPU.
              "median_paired_ratio_95ci": [round(x, 4) for x in measure.median_interval(paired)],
              # Process CPU time (all threads): what other jobs on a shared CPU move far less than wall time.
              "cpu_time_ratio": _ratio(statistics.median(on["cpu_times"]), statistics.median(off["cpu_times"])),
              "flops_ratio": _ratio(on["flops"], off["flops"]) if on["flops"] and off["flops"] else None}
    for name, run in runs.items():
        result[name] = {"step_ms": round(statistics.median(run["times"]) * 1e3, 3),
                        "step_ms_rounds": [round(t * 1e3, 3) for t in run["times"]],
                        "cpu_ms": round(statistics.median(run["cpu_times"]) * 1e3, 3), "flops_per_step": run["flops"],
                        "compile_s": run["compile_s"], "loss_after_warmup": run["loss_after_warmup"]}
    return result


def _ratio(a: float, b: float) -> float:
    return round(a / b, 4)
