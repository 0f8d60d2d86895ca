"""The evidence study: every method of a study recipe's table, at one budget, several seeds, one command.

    python -m genscl_jax.study --config configs/study_fashion_mnist.py --workdir runs/study

The recipe file has `get_config(arg)` (the run config all methods share) and `get_study(arg)` (the method table:
name -> config keys it changes, seeds, the CE probe; optionally a strong teacher every seed shares, re-probes of a
method's encoders with other linear-evaluation keys, a longer-budget check). Each run is a subprocess of
`python -m genscl_jax.main --config RECIPE --config.KEY=VALUE ... --workdir <workdir>/<method>/seed<N>`: a clean
process per run, and an argument list that results.json records verbatim, so any row can be rerun alone.

Resumable: a run whose workdir has summary.json is skipped; an unfinished one is started again, and main resumes
it from its newest checkpoint. Keys that say "{ce}" (the KD teacher, the CE probe) get the workdir of the CE run of
the same seed, which runs first; "{teacher}" the workdir of the shared teacher, which runs before everything.
A re-probe (a linear_eval run, e.g. with BatchNorm recalibrated) reads the encoder its method trained for the same
seed, so it costs a probe, not a pretraining. Results (results.json, results.md, a PNG) are rewritten after every
run.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

from genscl_jax.config import recipes
from genscl_jax.tools import study_report

CE = "ce"  # the method whose workdir "{ce}" names: the same-seed teacher and the probed CE network
TEACHER = "teacher"  # the one run "{teacher}" names: a strong KD teacher shared by every seed


class StudyError(RuntimeError):
    """A study that cannot go on; the message is one line saying why and what to do."""


@dataclasses.dataclass(frozen=True)
class Run:
    method: str
    seed: int
    phase: str  # "teacher" (the shared teacher), "main" (the table) or "longer" (the longer-budget check)
    workdir: str
    argv: list[str]  # python -m genscl_jax.main's arguments, without --workdir
    probe: bool = False  # the linear probe of the CE run
    probe_of: Run | None = None  # a re-probe: the run whose trained encoder this linear_eval run reads


def load_recipe(config: str):
    """(module, arg) of `path.py[:arg]`; the module must define get_config and get_study."""
    path, _, arg = config.partition(":")
    if not os.path.isfile(path):
        raise StudyError(f"--config {path}: no such file; give a study recipe such as configs/study_fashion_mnist.py")
    recipes.make_recipe_importable(path)  # the recipe may import its siblings (`from configs import ...`)
    spec = importlib.util.spec_from_file_location(f"_study_recipe_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("get_config", "get_study"):
        if not callable(getattr(module, name, None)):
            raise StudyError(f"--config {path} has no {name}(); a study recipe defines get_config (the shared run "
                             "config) and get_study (the method table), like configs/study_fashion_mnist.py")
    return module, arg


def override_args(keys: dict[str, Any], workdirs: dict[str, str]) -> list[str]:
    """--config.KEY=VALUE flags, "{ce}" / "{teacher}" replaced by those runs' workdirs (`workdirs`)."""
    args = []
    for key, value in keys.items():
        if isinstance(value, str):
            for name, path in workdirs.items():
                value = value.replace("{" + name + "}", path)
            if re.search(r"\{\w+\}", value):
                raise StudyError(f"get_study(): config.{key}={value!r} names a run the study does not have; "
                                 f"known: {', '.join('{' + n + '}' for n in workdirs)}")
        args.append(f"--config.{key}={value}")
    return args


def plan(config: str, workdir: str) -> list[Run]:
    """Every run of the study, in the order they must run: the shared teacher, then per seed CE, its probe, the
    other methods and the re-probes of their encoders, then the longer-budget check."""
    module, arg = load_recipe(config)
    study = module.get_study(arg)
    methods = study["methods"]
    if CE not in methods:
        raise StudyError(f"--config {config}: get_study()['methods'] needs a {CE!r} entry (the CE baseline and KD "
                         "teacher)")
    runs, shared = [], {}
    if study.get("teacher"):
        teacher = study["teacher"]
        shared[TEACHER] = os.path.join(workdir, TEACHER)
        argv = ["--config", config, *override_args(teacher["keys"], {}), f"--config.seed={teacher['seed']}"]
        runs.append(Run(TEACHER, teacher["seed"], "teacher", shared[TEACHER], argv))
    default_mode = module.get_config(arg).mode
    for seed in study["seeds"]:
        workdirs = {**shared, CE: os.path.join(workdir, CE, f"seed{seed}")}
        trained = {}
        for method, keys in methods.items():
            trained[method] = _run(config, workdir, method, seed, "main", keys, workdirs)
            runs.append(trained[method])
            if method == CE:
                runs.append(_run(config, workdir, method, seed, "main", study["ce_probe"], workdirs, probe=True))
        for name, reprobe in (study.get("reprobes") or {}).items():
            of = reprobe["of"]
            runs.append(_reprobe(config, workdir, name, seed, reprobe["keys"], trained[of], methods[of],
                                 default_mode, workdirs))
    longer = study.get("longer") or {}
    for steps in longer.get("num_train_steps", []):
        for seed in longer["seeds"]:
            workdirs = {**shared, CE: os.path.join(workdir, CE, f"seed{seed}")}
            for method in longer["methods"]:
                keys = {**methods[method], "num_train_steps": steps}
                root = os.path.join(workdir, f"longer_{steps}steps")
                runs.append(_run(config, root, method, seed, "longer", keys, workdirs))
    return runs


def _run(config, root, method, seed, phase, keys, workdirs, probe=False) -> Run:
    name = f"{method}_probe" if probe else method
    argv = ["--config", config, *override_args(keys, workdirs), f"--config.seed={seed}"]
    return Run(method, seed, phase, os.path.join(root, name, f"seed{seed}"), argv, probe)


def _reprobe(config, root, name, seed, probe_keys, trained: Run, trained_keys, default_mode, workdirs) -> Run:
    """A linear_eval run of the encoder `trained` trained: its method's keys (the same network), `probe_keys`."""
    encoder_dir = trained.workdir
    if trained_keys.get("mode", default_mode) == "pretrain_and_eval":
        encoder_dir = os.path.join(encoder_dir, "pretrain")  # where that mode pretrains
    keys = {**trained_keys, "mode": "linear_eval", "linear_eval.pretrained_workdir": encoder_dir, **probe_keys}
    return dataclasses.replace(_run(config, root, name, seed, "main", keys, workdirs), probe_of=trained)


def read_summary(workdir: str) -> dict[str, Any] | None:
    path = os.path.join(workdir, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def execute(run: Run) -> dict[str, Any]:
    """Runs (or resumes) one run in a subprocess, its output in <workdir>/log.txt; returns its summary."""
    os.makedirs(run.workdir, exist_ok=True)
    command = [sys.executable, "-m", "genscl_jax.main", *run.argv, "--workdir", run.workdir]
    env = dict(os.environ)
    # The package this module came from, also where the study is started from another directory.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with open(os.path.join(run.workdir, "log.txt"), "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
    summary = read_summary(run.workdir)
    if code != 0 or summary is None:
        raise StudyError(f"{run.workdir}: python -m genscl_jax.main exited {code} without a summary.json (see "
                         f"{run.workdir}/log.txt); rerun the study to resume it")
    return summary


def run_study(config: str, workdir: str, results_dir: str, *, longer: bool = True) -> list[dict[str, Any]]:
    """Runs what is not finished yet, rewriting the results after each run; returns the records."""
    runs = [r for r in plan(config, workdir) if longer or r.phase != "longer"]
    for index, run in enumerate(runs):
        label = f"[{index + 1}/{len(runs)}] {run.phase} {run.method}{' probe' if run.probe else ''} seed {run.seed}"
        if read_summary(run.workdir) is not None:
            print(f"{label}: finished before, skipped ({run.workdir})", flush=True)
            continue
        started = time.time()
        print(f"{label}: running in {run.workdir}", flush=True)
        summary = execute(run)
        headline = summary.get("linear_eval_top1", summary.get("test_top1"))
        print(f"{label}: done in {time.time() - started:.0f} s, top-1 {headline:.4f}", flush=True)
        study_report.write(collect(runs), config, workdir, results_dir)
    records = collect(runs)
    study_report.write(records, config, workdir, results_dir)
    return records


def collect(runs: list[Run]) -> list[dict[str, Any]]:
    """One record per finished method x seed x phase: the linear-probe top-1 (final and best over epochs), the
    argv that reproduces it; for CE also the classifier's own test top-1 and the training run's argv; for a
    re-probe the method it probes; for the shared teacher its classifier's top-1 and its steps."""
    by_key = {(r.phase, r.method, r.seed, r.probe): r for r in runs}
    records = []
    for run in runs:
        if run.probe or (run.method == CE and (run.phase, CE, run.seed, True) not in by_key):
            continue
        if run.phase == "teacher":
            record = _teacher_record(run)
        else:
            evaluated = by_key.get((run.phase, run.method, run.seed, True), run) if run.method == CE else run
            record = _probe_record(run, evaluated)
        if record is not None:
            records.append(record)
    return records


def _teacher_record(run: Run) -> dict[str, Any] | None:
    summary = read_summary(run.workdir)
    if summary is None:
        return None
    return {"method": run.method, "seed": run.seed, "phase": run.phase, "argv": run.argv, "workdir": run.workdir,
            "classifier_top1": summary["test_top1"], "pretrain_steps": summary["steps"],
            "wall_seconds": summary["total_wall_seconds"]}


def _probe_record(run: Run, evaluated: Run) -> dict[str, Any] | None:
    """`evaluated` holds the linear probe (the run itself, or the CE run's probe); the network was trained by `run`
    (or, for a re-probe, by run.probe_of, whose cost the re-probe does not repeat)."""
    trainer = run.probe_of or run
    summary, trained = read_summary(evaluated.workdir), read_summary(trainer.workdir)
    if summary is None or trained is None:
        return None
    wall_seconds = summary["total_wall_seconds"]  # a re-probe's pretraining is counted in its method's row
    if evaluated is not run:
        wall_seconds += trained["total_wall_seconds"]
    record = {"method": run.method, "seed": run.seed, "argv": evaluated.argv,
              "top1": summary["linear_eval_top1"], "top1_best": summary["linear_eval_best_top1"],
              "phase": run.phase, "workdir": evaluated.workdir, "pretrain_steps": trained["steps"],
              "wall_seconds": wall_seconds}
    if "linear_eval_train_top1" in summary:  # the probe's top-1 on its own training images (a subset's gap)
        record["train_top1"] = summary["linear_eval_train_top1"]
    if run.method == CE:
        record.update(classifier_top1=trained["test_top1"], train_argv=run.argv, train_workdir=run.workdir)
    if run.probe_of:
        record.update(probe_of=run.probe_of.method, train_workdir=run.probe_of.workdir)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genscl_jax.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="study recipe, e.g. configs/study_fashion_mnist.py[:tiny]")
    parser.add_argument("--workdir", required=True, help="one subdirectory per run: <method>/seed<N>")
    parser.add_argument("--results", default=None,
                        help="where results.json/.md/.png go (default: results/<dataset of the recipe>)")
    parser.add_argument("--no_longer", action="store_true", help="skip the longer-budget check")
    parser.add_argument("--report_only", action="store_true", help="rewrite the results from finished runs only")
    args = parser.parse_args(argv)
    try:
        module, arg = load_recipe(args.config)
        results_dir = args.results or os.path.join("results", module.get_config(arg).dataset)
        if args.report_only:
            runs = plan(args.config, args.workdir)
            study_report.write(collect(runs), args.config, args.workdir, results_dir)
        else:
            run_study(args.config, args.workdir, results_dir, longer=not args.no_longer)
    except StudyError as e:
        print(f"study error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"results: {results_dir}/results.json, results.md, results.png", flush=True)


if __name__ == "__main__":
    main()
