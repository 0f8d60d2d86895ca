"""The study's results: results.json (one record per run), results.md (mean +- std per method, the machine and
versions) and results.png (top-1 per method with every seed, and the pretraining loss curves from the runs'
TensorBoard events)."""

from __future__ import annotations

import datetime
import json
import os
import statistics
from typing import Any

from genscl_jax.tools import environment

METHOD_LABELS = {
    "ce": "CE (supervised; linear probe)",
    "supcon": "SupCon (GenSCL, one-hot labels)",
    "genscl_mix": "GenSCL + Mixup/CutMix",
    "genscl_mix_kd": "GenSCL + Mixup/CutMix + KD (same-budget CE teacher)",
    "genscl_kd_strong": "GenSCL + KD (strong teacher), no mixing",
    "genscl_mix_kd_strong": "GenSCL + Mixup/CutMix + KD (strong teacher)",
    "genscl_mix_half": "GenSCL + Mixup/CutMix on half the views (mix.prob 0.5)",
    "supcon_bn_recalibrated": "SupCon, BatchNorm recalibrated before the probe",
    "genscl_mix_bn_recalibrated": "GenSCL + Mixup/CutMix, BatchNorm recalibrated before the probe",
}


def write(records: list[dict[str, Any]], config: str, workdir: str, results_dir: str) -> None:
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, "results.json"), "w") as f:
        json.dump(records, f, indent=1)
    with open(os.path.join(results_dir, "results.md"), "w") as f:
        f.write(markdown(records, config, workdir))
    if records:
        plot(records, os.path.join(results_dir, "results.png"))


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.2f}" if values else "-"
    return f"{100 * statistics.mean(values):.2f} +- {100 * statistics.stdev(values):.2f}"


def _methods(records, phase):
    ordered = [r["method"] for r in records if r["phase"] == phase]
    return list(dict.fromkeys(ordered))


def table(records: list[dict[str, Any]], phase: str = "main") -> str:
    """Markdown: per method, the seeds, linear top-1 (final; best over epochs) mean +- sample std, in %."""
    lines = ["| method | pretraining steps | seeds | linear top-1 (final) | linear top-1 (best epoch) "
             "| per seed (final) |", "|---|---:|---:|---:|---:|---|"]
    budgets = sorted({r["pretrain_steps"] for r in records if r["phase"] == phase})
    for steps, method in ((s, m) for s in budgets for m in _methods(records, phase)):
        rows = [r for r in records if r["phase"] == phase and r["method"] == method and r["pretrain_steps"] == steps]
        if not rows:
            continue
        per_seed = ", ".join(f"{100 * r['top1']:.2f}" for r in rows)
        lines.append(f"| {METHOD_LABELS.get(method, method)} | {steps} | {len(rows)} | "
                     f"{mean_std([r['top1'] for r in rows])} | {mean_std([r['top1_best'] for r in rows])} | "
                     f"{per_seed} |")
    classifier = [r["classifier_top1"] for r in records if r["phase"] == phase and "classifier_top1" in r]
    if classifier:
        lines.append(f"| CE classifier itself (its own fc, not a probe) | | {len(classifier)} | "
                     f"{mean_std(classifier)} | | {', '.join(f'{100 * v:.2f}' for v in classifier)} |")
    return "\n".join(lines) + "\n"


def overfitting(records: list[dict[str, Any]], phase: str = "main") -> str:
    """Markdown: per method, the linear probe's top-1 on its own training images against the test top-1 (means over
    seeds, in %): how much of what the encoder learnt holds only for the images it was trained on."""
    lines = ["| method | probe's training top-1 | test top-1 | gap |", "|---|---:|---:|---:|"]
    for method in _methods(records, phase):
        rows = [r for r in records if r["phase"] == phase and r["method"] == method and "train_top1" in r]
        if rows:
            train, test = (statistics.mean(r[k] for r in rows) for k in ("train_top1", "top1"))
            lines.append(f"| {METHOD_LABELS.get(method, method)} | {100 * train:.2f} | {100 * test:.2f} | "
                         f"{100 * (train - test):.2f} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def teacher_line(records: list[dict[str, Any]]) -> str:
    """The shared strong teacher: its cost in steps, its own top-1 and its margin over the best student row."""
    teacher = next((r for r in records if r["phase"] == "teacher"), None)
    students = [r for r in records if r["phase"] == "main"]
    if teacher is None:
        return ""
    steps = f"{teacher['pretrain_steps']} steps"
    if students:
        student_steps = statistics.median(r["pretrain_steps"] for r in students)
        steps += f" ({teacher['pretrain_steps'] / student_steps:g}x the students' {student_steps:g})"
    text = (f"Strong teacher (the rows marked \"strong teacher\"): one CE run (`--config.mode=supervised`) of "
            f"{steps}, seed {teacher['seed']}, shared by every seed, trained in {teacher['wall_seconds'] / 60:.1f} "
            f"min; its own classifier's test top-1 is {100 * teacher['classifier_top1']:.2f} %")
    if students:
        mean_top1 = {m: statistics.mean(r["top1"] for r in students if r["method"] == m)
                     for m in _methods(records, "main")}
        best = max(mean_top1, key=mean_top1.get)
        text += (f", {100 * (teacher['classifier_top1'] - mean_top1[best]):+.2f} points from the best student row "
                 f"({METHOD_LABELS.get(best, best)}, {100 * mean_top1[best]:.2f} %)")
    return text + ".\n"


def wall_time_by_part(records: list[dict[str, Any]]) -> str:
    parts = {"strong teacher": "teacher", "table": "main", "longer-budget check": "longer"}
    minutes = {name: sum(r["wall_seconds"] for r in records if r["phase"] == phase) / 60
               for name, phase in parts.items()}
    return ", ".join(f"{name} {value:.1f} min" for name, value in minutes.items() if value)


def markdown(records: list[dict[str, Any]], config: str, workdir: str) -> str:
    hours = sum(r["wall_seconds"] for r in records) / 3600
    text = [f"# Study: {config}\n",
            f"Command: `python -m genscl_jax.study --config {config} --workdir {workdir}`\n",
            "Linear-probe test top-1 (%) on frozen encoder features, mean +- sample standard deviation over seeds; "
            "each row's runs and the argument lists that reproduce them are in results.json. For CE, the probe reads "
            "the supervised network without its classifier; the classifier's own top-1 is the last row. A "
            "\"BatchNorm recalibrated\" row probes the encoders of its method's row (same runs, same seeds) after "
            "recomputing their BatchNorm statistics on clean training images.\n",
            table(records, "main"), teacher_line(records)]
    gaps = overfitting(records)
    if gaps:
        text += ["\n## The probe on its own training images\n", gaps]
    if any(r["phase"] == "longer" for r in records):
        text += ["\n## Longer budgets, the epoch curve (one seed)\n", table(records, "longer")]
    else:
        text.append("\nLonger budget: not measured.\n")
    text += [f"\n## Environment\n\n- runs' wall time, summed: {hours:.2f} h ({wall_time_by_part(records)})",
             environment.study_lines(environment.facts(), datetime.datetime.now(datetime.timezone.utc))]
    return "\n".join(text)


def loss_curve(workdir: str) -> tuple[list[int], list[float]]:
    """(steps, losses) of the "loss" scalar in the TensorBoard events of `workdir`; the last value per step wins (a
    resumed run writes a second events file)."""
    import glob

    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.util import tensor_util

    by_step = {}
    for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
        for event in event_file_loader.EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.tag == "loss":
                    by_step[event.step] = float(tensor_util.make_ndarray(value.tensor))
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def plot(records: list[dict[str, Any]], path: str) -> None:
    """Left: linear top-1 per method, one dot per seed and the mean. Middle: GenSCL-loss curves (contrastive
    methods). Right: the CE run's cross-entropy (another loss, another scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in records if r["phase"] == "main"]
    methods = _methods(records, "main")
    colours = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    curve = [r for r in records if r["phase"] == "longer"]
    fig, axes = plt.subplots(1, 4 if curve else 3, figsize=(17 if curve else 13, 3.8), dpi=72)
    ax_top1, ax_gen, ax_ce = axes[:3]
    if curve:
        _plot_curve(axes[3], curve, main, colours)
    for i, method in enumerate(methods):
        values = [100 * r["top1"] for r in main if r["method"] == method]
        ax_top1.scatter([i] * len(values), values, color=colours[method], s=18, zorder=3)
        ax_top1.hlines(sum(values) / len(values), i - 0.25, i + 0.25, color=colours[method])
    ax_top1.set_xticks(range(len(methods)), methods, rotation=35, ha="right", fontsize=7)
    ax_top1.set_ylabel("linear top-1 (%), final")
    ax_top1.set_title("test top-1 (dots: seeds, bar: mean)", fontsize=9)
    for record in (r for r in main if "probe_of" not in r):  # a re-probe trained nothing: its method's curve
        pretrain = record.get("train_workdir") or os.path.join(record["workdir"], "pretrain")
        steps, losses = loss_curve(pretrain)
        axis = ax_ce if record["method"] == "ce" else ax_gen
        axis.plot(steps, losses, color=colours[record["method"]], linewidth=0.8, alpha=0.7,
                  label=record["method"] if record["seed"] == min(r["seed"] for r in main) else None)
    ax_gen.set_title("pretraining loss (GenSCL loss; targets differ by method)", fontsize=9)
    ax_ce.set_title("CE training loss", fontsize=9)
    for axis in (ax_gen, ax_ce):
        axis.set_xlabel("step")
        if axis.lines:  # the CE panel is empty until a CE run has finished
            axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_curve(axis, curve: list[dict[str, Any]], main: list[dict[str, Any]], colours: dict[str, str]) -> None:
    """Test top-1 against pretraining steps for the methods of the longer-budget runs, with the table's point of the
    same seed (the curve's 1x)."""
    for method in _methods(curve, "longer"):
        seeds = {r["seed"] for r in curve if r["method"] == method}
        points = sorted((r["pretrain_steps"], 100 * r["top1"]) for r in curve + main
                        if r["method"] == method and r["seed"] in seeds and "probe_of" not in r)
        axis.plot(*zip(*points), marker="o", color=colours.get(method), label=method)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("pretraining steps")
    axis.set_ylabel("linear top-1 (%), final")
    axis.set_title("test top-1 against pretraining length", fontsize=9)
    axis.legend(fontsize=7)
