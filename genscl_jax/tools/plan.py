"""`python -m genscl_jax.plan --config RECIPE[:arg] --target TARGET [--config.KEY=VALUE ...] [--json PATH]`:
the step(s) a config's mode runs, compiled for a Cloud TPU slice or NVIDIA GPUs from this machine, with no device.

    python -m genscl_jax.plan --config configs/imagenet_resnet50.py --target v5e-16
    python -m genscl_jax.plan --config configs/imagenet_resnet50.py:gpu8 --target h100-80gbx8 --json plan.json

Each step is built as its trainer builds it (plan_steps.py) and compiled by the accelerator's own compiler: libtpu
for TPUs (`pip install "genscl-jax[plan-tpu]"`), the CUDA plugin for GPUs (`[plan-gpu]`), both deviceless, the
host's JAX on CPU. Per device it prints:
  - the compiled memory plan (arguments, outputs, temporaries, donated aliases, code) against the device's memory
    (accelerators.py: each chip's published memory, or --device-memory-gb), and whether it fits, by how much;
  - FLOPs per step and per source image: XLA's cost analysis of the compiled TPU program; the GPU compiler gives
    none, so there the pre-optimisation HLO's cost (the CPU client's HLO cost analysis, the whole global step)
    divided by the device count. Both count a loop's body once, so a step that loops (micro-batches, the loss's
    row blocks) is counted on its twin lowered with the loops off: the same arithmetic, one more lowering;
  - the collectives of the optimised program (kind, count, bytes per device per step; tools/hlo_audit.py);
  - the compile time on this machine, and a roofline lower bound on the step time (the larger of FLOPs / peak bf16
    FLOP/s and the arguments + outputs + temporaries / memory bandwidth, both per device), labelled as a bound:
    neither compiler gives a usable time (libtpu's optimal_seconds can be negative).
Where a step does not fit, it compiles candidates for that step alone (the training step: the loss in row blocks,
micro-batches of halving size, then with remat="blocks"; the linear evaluation's: halving its batches) and names
the first that fits as the `--config.` flags to add. Exit status 0 when every step fits, 3 when one does not,
2 for a bad input (one line, before anything compiles).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any, Sequence

import jax
from absl import flags
from ml_collections import config_flags

from genscl_jax import data
from genscl_jax.config import keys, recipes, validation
from genscl_jax.data import registry
from genscl_jax.tools import accelerators, deviceless, hlo_audit, measure, plan_steps

MAX_CANDIDATES = 8  # compiles spent looking for a change that fits (each is minutes for a ResNet-50 on a CPU)


class PlanError(Exception):
    """A bad input, as one line that names the problem and the fix."""


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m genscl_jax.plan", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--config", required=True, help="a recipe file in configs/, optionally :arg")
    parser.add_argument("--target", required=True, help=accelerators.known_targets())
    parser.add_argument("--json", help="write the result as one JSON object to this path ('-': stdout)")
    parser.add_argument("--device-memory-gb", type=float, help="the device memory (GiB) to fit in, instead of the "
                        "chip's published memory")
    parser.add_argument("--hlo-dir", help="write each step's optimised HLO here (STEP.hlo.txt), for hlo_audit")
    parser.add_argument("--no-suggest", action="store_true", help="do not compile candidates when a step does not fit")
    parser.add_argument("--any-libtpu", action="store_true", help="compile with the installed libtpu even where it is "
                        "not the one jax pins (a newer libtpu compiles v6e programs jax 0.10.2's pin crashes on)")
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args, rest


def load_config(recipe: str, overrides: list[str]) -> Any:
    """The recipe with its --config.KEY=VALUE overrides, or PlanError (one line), as main.py loads it."""
    problem = recipes.recipe_file_problem(recipe)
    if problem:
        raise PlanError(f"config error: {problem}")
    for arg in overrides:
        error = keys.unknown_key_error(arg[len("--config."):].split("=", 1)[0])
        if error:
            raise PlanError(f"config error: {error}")
    recipes.make_recipe_importable(recipe)
    values = flags.FlagValues()
    argv = ["plan", f"--config={recipe}", *overrides]
    # sys_argv: config_flags otherwise finds the --config.KEY flags to accept in sys.argv, which holds them only when
    # this is the command line (not a notebook's or a test's call).
    config_flags.DEFINE_config_file("config", None, "recipe", flag_values=values, lock_config=True, sys_argv=argv)
    try:
        values(argv)
    except Exception as e:  # noqa: BLE001 -- the recipe's own code runs here, and may raise anything
        raise PlanError(f"config error: {recipe}: {str(e).strip().splitlines()[-1]}") from None
    return values.config


def with_changes(config: Any, changes: dict[str, Any]) -> Any:
    return recipes.set_keys(config.copy_and_resolve_references(), changes)


def flags_of(changes: dict[str, Any]) -> str:
    return " ".join(f"--config.{k}={v}" for k, v in changes.items())


def candidates(config: Any, num_devices: int) -> list[dict[str, Any]]:
    """Changes that lower a step's memory, smallest first: the loss in blocks of anchor rows (the same loss), then
    also micro-batches of halving size (the loss still spans the whole batch; BatchNorm then normalises each
    micro-batch), then also remat="blocks" (each residual block recomputed in the backward pass)."""
    rows = config.batch_size * (config.num_views if config.mode != "supervised" else 1)
    base = {}
    if config.mode != "supervised" and not config.loss_block_size and rows >= 8 * num_devices:
        base = {"loss_block_size": max(rows // 8 // num_devices, 1) * num_devices}
    sizes, size = [], config.batch_size // 2
    while size >= num_devices and size % num_devices == 0 and config.batch_size % size == 0:
        if not config.micro_batch_size or size < config.micro_batch_size:
            sizes.append(size)
        size //= 2
    found = ([base] if base else []) + [{**base, "micro_batch_size": s} for s in sizes]
    if config.remat == "none":
        found += [{**base, "micro_batch_size": s, "remat": "blocks"} for s in [config.micro_batch_size, *sizes] if s]
    return found


def linear_eval_candidates(config: Any, num_devices: int, over: set[str]) -> list[dict[str, Any]]:
    """Changes that lower the linear evaluation's memory, smallest first: halving batches of the programs in `over`
    that do not fit (eval_batch_size: the encoder's pass over evaluation and stored-feature batches, which changes no
    result; linear_eval.batch_size: the classifier's training batch), down to one example per device."""
    keys_of = {"linear_eval_features": "eval_batch_size", "linear_eval": "linear_eval.batch_size"}
    values = keys.flatten(config)
    sizes = {keys_of[name]: values[keys_of[name]] for name in sorted(over) if name in keys_of}
    found, halvings = [], 1
    while sizes:
        changes = {key: size // 2 ** halvings for key, size in sizes.items()}
        if any(v < num_devices or v % num_devices for v in changes.values()):
            break
        found.append(changes)
        halvings += 1
    return found


# Keys whose steps loop (lax.scan over micro-batches, over the loss's row blocks), with the value that unrolls them,
# and the steps they reach (the linear evaluation's programs never loop).
_LOOPS_OFF = {"micro_batch_size": 0, "loss_block_size": 0}
_LOOPING_STEPS = ("pretrain", "supervised")


def compile_step(config: Any, mesh: Any, source: Any, *, loops_counted: bool = True,
                 kinds: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Each of the mode's steps (of `kinds` only, if given) compiled for `mesh`: its figures (report_step) per step.
    `loops_counted`: a looping step's FLOPs from its loop-free twin (one more lowering); a candidate of suggest()
    needs only its memory."""
    results, loop_free = [], _loop_free_flops(config, mesh, source) if loops_counted else {}
    for step in plan_steps.lower_steps(config, mesh, source, kinds=kinds):
        t0 = time.perf_counter()
        try:
            compiled = step.lowered.compile()
        except jax.errors.JaxRuntimeError as e:
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            results.append(report_refused(step, str(e), time.perf_counter() - t0, mesh.devices.size,
                                          loop_free.get(step.name)))
            continue
        results.append(report_step(step, compiled, time.perf_counter() - t0, mesh.devices.size,
                                   loop_free.get(step.name)))
    return results


# libtpu refuses to compile a program that cannot fit: "... the total memory required for HLO temporaries (20.61G)
# exceeds available HBM (15.25G)". Its figure is after the compiler's own rematerialisation, so a lower bound.
_REFUSAL_BYTES = re.compile(r"required for [^(]*\(([\d.]+)([KMGT]?)\)")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def report_refused(step: Any, message: str, compile_seconds: float, num_devices: int,
                   loop_free_flops: float | None = None) -> dict[str, Any]:
    """report_step's figures for a step the accelerator's compiler refused for its memory (XLA:TPU stops there
    rather than returning a plan): the memory it said the step needs, FLOPs from the lowered program, no
    collectives (there is no compiled program to read)."""
    found = _REFUSAL_BYTES.search(message)
    need = int(float(found.group(1)) * _UNITS[found.group(2)]) if found else None
    reason = next((line.strip() for line in message.splitlines() if "RESOURCE_EXHAUSTED" in line), message)
    return {**_step_figures(step, num_devices, compile_seconds, None, loop_free_flops),
            "memory_plan": {"temp": need} if need else {}, "planned_bytes": need,
            "refused_by_compiler": reason[:500], "collectives": [], "hlo": ""}


def fits(step: dict[str, Any], memory: int) -> bool:
    """Whether a compiled step's plan is within `memory` per device. A step the compiler refused never fits,
    whatever `memory` says: the compiler judged it against its own figure."""
    return "refused_by_compiler" not in step and step["planned_bytes"] <= memory


def _loop_free_flops(config: Any, mesh: Any, source: Any) -> dict[str, float]:
    """Global FLOPs of each step lowered with its loops off (the same arithmetic, not compiled), where `config` loops.
    XLA's cost analyses count a while loop's body once, so a micro-batched step's own count is low by the trip count
    (BENCHMARKS.md 11.1)."""
    if not any(config.get(key) for key in _LOOPS_OFF):
        return {}
    unrolled = with_changes(config, {k: v for k, v in _LOOPS_OFF.items() if config.get(k)})
    return {step.name: _pre_optimisation_flops(step.lowered)
            for step in plan_steps.lower_steps(unrolled, mesh, source, kinds=_LOOPING_STEPS)}


def report_step(step: Any, compiled: Any, compile_seconds: float, num_devices: int,
                loop_free_flops: float | None = None) -> dict[str, Any]:
    plan = measure.memory_plan(compiled) or {}
    code = int(getattr(compiled.memory_analysis(), "generated_code_size_in_bytes", 0) or 0)
    hlo = compiled.as_text()  # megabytes of text for a ResNet-50 step: made once
    found = hlo_audit.collectives(hlo)
    return {**_step_figures(step, num_devices, compile_seconds, measure.compiled_flops(compiled), loop_free_flops),
            "memory_plan": {**plan, "code": code}, "planned_bytes": plan.get("total", 0) + code,
            "collectives": [{"kind": kind, **v} for kind, v in hlo_audit.summarize(found).items()], "hlo": hlo}


def _step_figures(step: Any, num_devices: int, compile_seconds: float, compiled_flops: float | None,
                  loop_free_flops: float | None) -> dict[str, Any]:
    """What report_step and report_refused both say of a step: its kind, batch, compile time and FLOPs per
    device, from its loop-free twin where it loops, else the compiler's count, else the lowered program's."""
    if loop_free_flops is not None:
        flops, flops_source = loop_free_flops / num_devices, (
            "the step lowered with micro_batch_size=0 and loss_block_size=0 (XLA counts a loop's body once), "
            "pre-optimisation HLO, CPU client's HLO cost analysis, global step / devices")
    elif compiled_flops is not None:
        flops, flops_source = compiled_flops, "compiled.cost_analysis() (per device)"
    else:
        flops, flops_source = _pre_optimisation_flops(step.lowered) / num_devices, (
            "pre-optimisation HLO, CPU client's HLO cost analysis, global step / devices")
    return {"step": step.name, "kind": step.kind, "global_batch": step.global_batch,
            "flops_per_step": flops, "flops_per_source_image": flops * num_devices / step.global_batch,
            "flops_source": flops_source, "compile_s": round(compile_seconds, 1)}


def _pre_optimisation_flops(lowered: Any) -> float:
    """FLOPs of the lowered (unpartitioned, global) program by the CPU client's HLO cost analysis."""
    import jax._src.xla_bridge as xla_bridge  # noqa: SLF001 -- the one route to XLA's HLO cost analysis
    from jax._src.lib import xla_client  # noqa: SLF001

    module = lowered.compiler_ir("hlo").as_hlo_module()
    analysis = xla_client._xla.hlo_module_cost_analysis(xla_bridge.get_backend("cpu"), module)  # noqa: SLF001
    return float(analysis.get("flops", 0.0))


def roofline_seconds(step: dict[str, Any], chip: accelerators.Chip) -> float:
    """A lower bound on the step time: FLOPs at the peak, or every planned byte moved once at full bandwidth."""
    plan = step["memory_plan"]
    moved = plan.get("argument", 0) + plan.get("output", 0) + plan.get("temp", 0)
    return max(step["flops_per_step"] / chip.peak_bf16_flops, moved / chip.memory_bandwidth)


def plan(args: argparse.Namespace, overrides: list[str], say=print) -> dict[str, Any]:
    """Everything up to the compile is checked first; PlanError for a bad input."""
    try:
        target = accelerators.parse_target(args.target)
    except accelerators.TargetError as e:
        raise PlanError(str(e)) from None
    problem = deviceless.compiler_problem(target.platform, any_libtpu=args.any_libtpu)
    if problem:
        raise PlanError(problem)
    config = load_config(args.config, overrides)
    if config.kd.alpha > 0 and not config.kd.teacher:
        # The step compiles for the teacher's shapes only (config.kd.teacher_model): its weights are not needed.
        config = with_changes(config, {"kd.teacher": "random weights (plan)"})
    try:
        validation.validate(config, num_devices=target.num_devices)
    except validation.ConfigError as e:
        raise PlanError(f"config error: {e}") from None
    if config.mode not in plan_steps.STEPS_OF_MODE:
        raise PlanError(f"mode {config.mode!r}: the plan compiles {', '.join(plan_steps.STEPS_OF_MODE)}")
    if config.dataset not in registry.DATASETS:
        raise PlanError(f"dataset {config.dataset!r}: the plan needs a built-in dataset's facts ("
                        f"{', '.join(registry.DATASETS)}); set --config.dataset to the one of the same shape")
    source = data.resolve(config)
    memory = int(args.device_memory_gb * accelerators.GIB) if args.device_memory_gb else target.chip.memory_bytes
    say(f"compiling {config.mode} for {target.describe()} ({target.chip.device_kind}, "
        f"{_size(memory)} each), global batch {config.batch_size} ...")
    # A persistent cache (JAX_COMPILATION_CACHE_DIR) is for programs this host runs; these run elsewhere.
    jax.config.update("jax_enable_compilation_cache", False)
    mesh = deviceless.target_mesh(target)
    steps = compile_step(config, mesh, source)
    result = {"target": args.target, "device_kind": mesh.devices.flat[0].device_kind,
              "num_devices": target.num_devices, "hosts": target.hosts, "mode": config.mode,
              "global_batch": config.batch_size, "device_memory_bytes": memory,
              "peaks": {"bf16_flops": target.chip.peak_bf16_flops, "memory_bandwidth": target.chip.memory_bandwidth,
                        "source": target.chip.source},
              "steps": [], "suggestion": None}
    for step in steps:
        hlo = step.pop("hlo")
        if args.hlo_dir and hlo:
            os.makedirs(args.hlo_dir, exist_ok=True)
            with open(os.path.join(args.hlo_dir, f"{step['step']}.hlo.txt"), "w") as f:
                f.write(hlo)
        step["fits"] = fits(step, memory)
        step["roofline_lower_bound_s"] = roofline_seconds(step, target.chip)
        result["steps"].append(step)
    first = result["steps"][0]
    result.update({k: first[k] for k in ("planned_bytes", "flops_per_step", "collectives", "compile_s")})
    result["fits"] = all(s["fits"] for s in result["steps"])
    for step in result["steps"]:
        say(step_lines(step, memory))
    if not result["fits"] and not args.no_suggest:
        result["suggestion"], result["candidates"] = suggest(config, mesh, source, memory, result["steps"], say)
    return result


def suggest(config: Any, mesh: Any, source: Any, memory: int, steps: list[dict[str, Any]],
            say) -> tuple[str | None, list[dict[str, Any]]]:
    """For each kind of step that does not fit (the training step; the linear evaluation's programs), the first
    candidate (smallest change first) that makes it fit, compiling only that kind's steps; together, as --config.
    flags. None when a kind has no candidate that fits."""
    over = {step["step"] for step in steps if not step["fits"]}
    chosen, tried = {}, []
    for kind in dict.fromkeys(step["kind"] for step in steps if not step["fits"]):
        options = (linear_eval_candidates(config, mesh.devices.size, over) if kind == "linear_eval"
                   else candidates(config, mesh.devices.size))
        for changes in options[:MAX_CANDIDATES]:
            compiled = compile_step(with_changes(config, changes), mesh, source, loops_counted=False, kinds=(kind,))
            planned = max(step["planned_bytes"] or 0 for step in compiled)
            fit = all(fits(step, memory) for step in compiled)
            refused = " (refused by the compiler)" if any("refused_by_compiler" in step for step in compiled) else ""
            tried.append({"flags": flags_of(changes), "steps": [step["step"] for step in compiled],
                          "planned_bytes": planned, "fits": fit,
                          "compile_s": sum(step["compile_s"] for step in compiled)})
            say(f"  candidate {flags_of(changes)} ({kind}): {_size(planned)} per device{refused}, "
                f"{'fits' if fit else 'does not fit'} ({tried[-1]['compile_s']:.0f} s to compile)")
            if fit:
                chosen.update(changes)
                break
        else:
            return None, tried
    return flags_of(chosen), tried


def _size(num_bytes: float) -> str:
    """Bytes in GiB to the hundredth, or in MiB below a GiB (tiny models)."""
    if abs(num_bytes) < accelerators.GIB:
        return f"{num_bytes / 2**20:.1f} MiB"
    return f"{num_bytes / accelerators.GIB:.2f} GiB"


def step_lines(step: dict[str, Any], memory: int) -> str:
    header = f"{step['step']} step (global batch {step['global_batch']}), per device:"
    flops = (f"  FLOPs: {step['flops_per_step']:.4g} per step, {step['flops_per_source_image'] / 1e9:.1f} GFLOP per "
             f"source image ({step['flops_source']})")
    if "refused_by_compiler" in step:  # no plan, no program: what the compiler said instead
        return "\n".join([header, f"  memory: does NOT fit: the compiler refused it ({step['refused_by_compiler']})",
                          flops, f"  refused after {step['compile_s']:.0f} s of compiling here"])
    p = step["memory_plan"]
    margin = memory - step["planned_bytes"]
    verdict = (f"fits, {_size(margin)} to spare" if margin >= 0 else f"does NOT fit, {_size(-margin)} over")
    collectives = ", ".join(f"{c['kind']} x{c['count']} {c['bytes'] / 2**20:.1f} MiB" for c in step["collectives"])
    return "\n".join([
        header,
        f"  memory: {_size(step['planned_bytes'])} of {_size(memory)}: {verdict} (arguments "
        f"{_size(p.get('argument', 0))}, outputs {_size(p.get('output', 0))}, aliased {_size(p.get('alias', 0))}, "
        f"temporaries {_size(p.get('temp', 0))}, code {_size(p.get('code', 0))})",
        flops,
        f"  collectives: {collectives or 'none'}",
        f"  compiled in {step['compile_s']:.0f} s here; roofline lower bound "
        f"{step['roofline_lower_bound_s'] * 1e3:.1f} ms per step (a bound, not a time)"])


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        result = plan(args, overrides)
    except PlanError as e:
        print(f"plan: {e}", file=sys.stderr)
        return 2
    if result["suggestion"]:
        print(f"does not fit; the smallest change that fits: {result['suggestion']}")
    elif not result["fits"]:
        print("does not fit, and no candidate tried fits" + ("" if args.no_suggest else
                                                              f" ({len(result.get('candidates', []))} compiled)"))
    if args.json:
        text = json.dumps(result, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0 if result["fits"] else 3
