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
    median of the per-round ratios.

Only jax, flax, optax, orbax, numpy and ml_collections are imported: no TensorFlow, tfds or clu, so it runs on a
bare accelerator VM (with ml_collections' wheel carried there). The data is one batch of noise reused every step:
input work is not timed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from genscl_jax import data, models
from genscl_jax.config import defaults, recipes
from genscl_jax.data import device_preprocess, registry
from genscl_jax.models import model_builder
from genscl_jax.objectives import loss_chunked, losses, mixing
from genscl_jax.runtime import compile_options, parallel
from genscl_jax.trainers import pretrain, teachers
from genscl_jax.training import optimizers

GIB = 1024**3
LOSS_IMPLS = ("dense", "chunked")


# ----------------------------------------------------------------------------------------------- environment


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "date": datetime.date.today().isoformat(),
        "jax": jax.__version__,
        "jaxlib": _jaxlib_version(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "num_devices": len(devices),
        "num_processes": jax.process_count(),
        "cpu": cpu_model_name(),
        "host_cpus": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "python": platform.python_version(),
    }


def _jaxlib_version() -> str:
    import jaxlib

    return jaxlib.__version__


# ------------------------------------------------------------------------------------------- timing helpers


def time_loop(run: Callable[[int], Any], *, repeats: int, steps: int) -> list[float]:
    """Seconds per step of each repeat; `run(steps)` runs that many steps and returns what to block on."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(steps))
        times.append((time.perf_counter() - start) / steps)
    return times


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


def _gib(num_bytes: int | None) -> float | None:
    return None if num_bytes is None else round(num_bytes / GIB, 3)


# ------------------------------------------------------------------------------------------------ the step


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
        module = teachers.teacher_module(self.config, self.num_classes)
        sample = jnp.zeros((1, self.args.image_size, self.args.image_size, channels), jnp.float32)
        init = lambda rng: module.init(rng, sample, train=False)  # noqa: E731
        rng = jax.random.PRNGKey(self.args.seed + 1)
        if abstract:
            return teachers.Teacher(module, jax.eval_shape(init, rng))
        variables = compile_options.run_once(init, rng, out_shardings=parallel.replicated(self.mesh))
        return teachers.Teacher(module, variables)

    def training_compiler_options(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """What the trainer compiles this step with (compile_utils: the CPU convolution library), then `extra`."""
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


def step_preprocessing(args: argparse.Namespace, spec: data.DatasetInfo) -> device_preprocess.Preprocessing:
    """What the step does to its uint8 views, as for the dataset this shape stands for: ImageNet at 64 px and more
    (with --color-augment: colour jitter, grayscale and blur on the device), CIFAR below (no blur)."""
    entry = registry.get("imagenet2012" if args.image_size >= 64 else "cifar10")
    return device_preprocess.for_training(entry, spec, policy="simclr", image_size=args.image_size,
                                          device_color_augment=args.color_augment)


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
    options = bench.training_compiler_options(_parse_compiler_options(args.compiler_option))
    compiled, compile_seconds = bench.compile(options)
    plan = memory_plan(compiled)
    return {"mode": "step_plan", "config": describe_step(args), "num_classes": bench.num_classes,
            "num_devices": bench.num_devices, "global_batch": bench.global_batch, "num_params": bench.num_params,
            "lower_s": round(bench.lower_seconds, 3), "compile_s": round(compile_seconds, 3),
            "planned_bytes": None if plan is None else plan["total"], "memory_plan": plan,
            "flops_per_step": compiled_flops(compiled), "compiler_options": options}


def bench_step(args: argparse.Namespace) -> dict[str, Any]:
    if args.plan_only:
        return plan_step(args)
    bench = StepBenchmark(args)
    options = bench.training_compiler_options(_parse_compiler_options(args.compiler_option))
    compiled, compile_seconds = bench.compile(options)
    run = bench.runner(compiled)
    state, metrics = jax.block_until_ready(run(max(args.warmup, 1)))
    loss = float(jax.device_get(metrics["loss"]))
    times = time_loop(run, repeats=args.repeats, steps=args.steps)
    step_s = statistics.median(times)
    flops = compiled_flops(compiled)
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
        "peak_device_bytes": device_peak_bytes(),
        "planned_bytes": planned_bytes(compiled),
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
            _parse_compiler_options(args.compiler_option)))
        run = bench.runner(compiled)
        _, metrics = jax.block_until_ready(run(max(args.warmup, 1)))
        runs["on" if monitor else "off"] = {"run": run, "compile_s": round(compile_seconds, 3), "times": [],
                                            "cpu_times": [], "flops": compiled_flops(compiled),
                                            "loss_after_warmup": float(jax.device_get(metrics["loss"]))}
    for round_index in range(args.repeats):
        for name in (("on", "off") if round_index % 2 == 0 else ("off", "on")):
            cpu_start = time.process_time()
            runs[name]["times"] += time_loop(runs[name]["run"], repeats=1, steps=args.steps)
            runs[name]["cpu_times"].append((time.process_time() - cpu_start) / args.steps)
    on, off = runs["on"], runs["off"]
    result = {"mode": "monitor_cost", "config": describe_step(args), "global_batch": bench.global_batch,
              "rounds": args.repeats, "steps_per_round": args.steps,
              "ratio_of_medians": _ratio(statistics.median(on["times"]), statistics.median(off["times"])),
              "median_paired_ratio": round(statistics.median(a / b for a, b in zip(on["times"], off["times"])), 4),
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


def _monitor_cost_lines(r: dict[str, Any]) -> list[str]:
    c = r["config"]
    return [f"monitor cost: {c['model']} x{c['width']} {c['image_size']}px {c['dtype']} global batch "
            f"{r['global_batch']} x {c['num_views']} views, moco={c['moco']}, {r['rounds']} rounds x "
            f"{r['steps_per_round']} steps",
            f"  step ms with probe + diagnostics {r['on']['step_ms']:.2f}, without {r['off']['step_ms']:.2f}: "
            f"ratio {r['ratio_of_medians']:.4f} (median paired {r['median_paired_ratio']:.4f}, CPU time "
            f"{r['cpu_time_ratio']:.4f}, XLA FLOPs {r['flops_ratio']})"]


# ------------------------------------------------------------------------------------------- the loss alone


def _loss_inputs(key, num_anchors: int, num_contrasts: int, num_classes: int, dim: int):
    """Unit features and mixup-like label distributions (two classes per row) for anchors and contrasts."""
    keys = jax.random.split(key, 6)

    def unit(k, n):
        x = jax.random.normal(k, (n, dim), jnp.float32)
        return x / jnp.linalg.norm(x, axis=1, keepdims=True)

    def labels(k, n):
        ka, kb, kl = jax.random.split(k, 3)
        lam = jax.random.uniform(kl, (n, 1))
        return (lam * jax.nn.one_hot(jax.random.randint(ka, (n,), 0, num_classes), num_classes)
                + (1 - lam) * jax.nn.one_hot(jax.random.randint(kb, (n,), 0, num_classes), num_classes))

    return unit(keys[0], num_anchors), labels(keys[1], num_anchors), unit(keys[2], num_contrasts), \
        labels(keys[3], num_contrasts)


def loss_function(impl: str, *, with_queue: bool, block_size: int):
    """(anchors, labels, contrasts, contrast_labels) -> loss, differentiated w.r.t. the anchors.

    With a queue the contrasts are stop-gradient keys, as in the MoCo step; without one the anchors are their
    own contrasts (all-vs-all) and the gradient flows through both sides.
    """
    if impl == "dense":
        loss = losses.generalized_supcon_loss
    elif impl == "chunked":
        def loss(*a, **kw):
            return loss_chunked.generalized_supcon_loss_chunked(*a, block_size=block_size, **kw)
    else:
        raise ValueError(f"--loss-impl must be one of {LOSS_IMPLS}, got {impl!r}")

    def fn(anchors, labels, contrasts, contrast_labels):
        if not with_queue:
            return loss(anchors, labels)
        return loss(anchors, labels, contrast_features=contrasts, contrast_labels=contrast_labels,
                    contrast_mask=jnp.ones(contrasts.shape[0], bool))

    return jax.value_and_grad(fn)


def bench_loss_case(args: argparse.Namespace, num_anchors: int, num_classes: int, impl: str,
                    memory_cap: int) -> dict[str, Any]:
    with_queue = args.queue > 0
    num_contrasts = num_anchors + args.queue if with_queue else num_anchors
    case = {"mode": "loss", "impl": impl, "anchors": num_anchors, "contrasts": num_contrasts,
            "classes": num_classes, "dim": args.head_dim, "block_size": args.loss_block if impl == "chunked" else None}
    inputs = jax.jit(_loss_inputs, static_argnums=(1, 2, 3, 4))(
        jax.random.PRNGKey(args.seed), num_anchors, num_contrasts if with_queue else 1, num_classes, args.head_dim)
    fn = jax.jit(loss_function(impl, with_queue=with_queue, block_size=args.loss_block))
    t0 = time.perf_counter()
    compiled = fn.lower(*inputs).compile(compiler_options=_parse_compiler_options(args.compiler_option) or None)
    case["compile_s"] = round(time.perf_counter() - t0, 3)
    # XLA's cost analysis counts a loop body once, not once per block: the chunked loss's count would be too low.
    looped = impl == "chunked" and num_anchors > args.loss_block
    case["flops"] = None if looped else compiled_flops(compiled)
    need = planned_bytes(compiled)
    case["planned_bytes"] = need
    case["planned_gib"] = _gib(need)
    case["fits_budget"] = None if need is None else need <= args.memory_budget_gb * GIB
    case["memory_budget_gib"] = args.memory_budget_gb
    if need is not None and need > memory_cap:
        case["skipped"] = f"needs {need / GIB:.1f} GiB, more than the {memory_cap / GIB:.1f} GiB this device has"
        return case
    if args.plan_only:
        case["skipped"] = "--plan-only"
        return case
    value, grad = jax.block_until_ready(compiled(*inputs))
    case["loss"] = float(value)
    case["grad_finite"] = bool(jnp.all(jnp.isfinite(grad)))
    times = time_loop(lambda n: [compiled(*inputs) for _ in range(n)][-1], repeats=args.repeats,
                      steps=args.loss_steps)
    case["ms"] = round(statistics.median(times) * 1e3, 3)
    case["ms_repeats"] = [round(t * 1e3, 3) for t in times]
    case["peak_device_bytes"] = device_peak_bytes()
    flops = case["flops"]
    case["tflops_per_s"] = round(flops / statistics.median(times) / 1e12, 4) if flops else None
    return case


def bench_loss(args: argparse.Namespace) -> dict[str, Any]:
    memory_cap = device_memory_limit() or int(args.host_memory_fraction * host_memory_bytes())
    cases = []
    for impl in _csv(args.loss_impl, str):
        for num_classes in _csv(args.classes, int):
            for num_anchors in _csv(args.anchors, int):
                case = bench_loss_case(args, num_anchors, num_classes, impl, memory_cap)
                cases.append(case)
                print(_loss_line(case), flush=True, file=_human_stream(args))
    return {"mode": "loss", "queue": args.queue, "memory_cap_bytes": memory_cap, "cases": cases}


# --------------------------------------------------------------------------------------------------- output


def _csv(text: str, kind: type) -> list[Any]:
    return [kind(x) for x in str(text).split(",") if x.strip()]


def _parse_compiler_options(items: Sequence[str] | None) -> dict[str, Any]:
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
    parts = "   ".join(f"{k} {_gib(plan[k])}" for k in ("argument", "output", "temp", "alias") if k in plan)
    return [_step_title(r), f"  memory plan per device: {_gib(r['planned_bytes'])} GiB ({parts} GiB; "
                            f"compiled.memory_analysis)   compile s {r['compile_s']:.1f}   --plan-only: not run"]


def _step_lines(r: dict[str, Any]) -> list[str]:
    if r["mode"] == "step_plan":
        return _plan_lines(r)
    peak = _gib(r["peak_device_bytes"])
    lines = [
        _step_title(r),
        f"  images/s {r['images_per_s']:.1f}   step ms {r['step_ms']:.2f} (median of {len(r['step_ms_repeats'])} "
        f"repeats: {r['step_ms_repeats']})   compile s {r['compile_s']:.1f}",
        f"  memory: planned {_gib(r['planned_bytes'])} GiB (compiled.memory_analysis)   device peak "
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
    peak = _gib(case["peak_device_bytes"])
    return f"{head}   {case['ms']:.2f} ms fwd+bwd   device peak {'n/a' if peak is None else f'{peak} GiB'}"


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
    g = p.add_argument_group("step")
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
    g = p.add_argument_group("loss only")
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
    args = p.parse_args(argv)
    if args.quick:
        given = sys.argv[1:] if argv is None else argv
        explicit = {a.lstrip("-").split("=")[0].replace("-", "_") for a in given if a.startswith("--")}
        for key, value in QUICK.items():
            if key not in explicit:
                setattr(args, key, value)
    for impl in _csv(args.loss_impl, str):
        if impl not in LOSS_IMPLS:
            p.error(f"--loss-impl: {impl!r} is not one of {LOSS_IMPLS}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = _human_stream(args)
    env = environment()
    print(f"# {env['date']} jax {env['jax']} on {env['num_devices']} x {env['device_kind']} ({env['backend']}), "
          f"cpu: {env['cpu']} x{env['host_cpus']}, XLA_FLAGS={env['xla_flags']!r}", file=out, flush=True)
    results: dict[str, Any] = {"environment": env, "argv": list(argv if argv is not None else sys.argv[1:])}
    if args.loss_only:
        results["loss"] = bench_loss(args)
    elif args.input == "jpeg":
        from genscl_jax.tools import pipeline_bench  # TensorFlow, only in this mode

        results["pipeline_step"] = pipeline_bench.bench_pipeline_step(args, StepBenchmark)
        print("\n".join(pipeline_bench.lines(results["pipeline_step"])), file=out, flush=True)
    elif args.monitor_cost:
        results["monitor_cost"] = bench_monitor_cost(args)
        print("\n".join(_monitor_cost_lines(results["monitor_cost"])), file=out, flush=True)
    else:
        results["step"] = bench_step(args)
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
