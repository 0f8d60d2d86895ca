"""Turns a gpu_suite.sh results folder into the Markdown rows BENCHMARKS.md section 5 takes, and the loss's share
of the paper-scale step, so the figures go from the accelerator's JSON to the table without hand copying.

    python benchmarks/summarize_suite.py benchmarks/results            # after bash benchmarks/gpu_suite.sh

Reads every <case>.json that `python -m genscl_jax.bench --json` wrote (and failed.txt, gpu.txt when present).
The loss share is loss ms at N anchors / (step ms x N / (views x per-device batch)): the loss of the recipe's
global batch against the time one device needs for that batch's images (row-sharding divides both by the
number of devices).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

GIB = 1024**3
PAPER_ANCHORS, PAPER_CLASSES = 8192, 1000  # ImageNet recipe: 4096 source images x 2 views, 1000 classes


def _gib(num_bytes):
    return "-" if num_bytes is None else f"{num_bytes / GIB:.2f}"


def _fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)


def load(folder: str) -> dict[str, dict]:
    results = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as f:
            results[os.path.splitext(os.path.basename(path))[0]] = json.load(f)
    return results


def step_rows(results: dict[str, dict]) -> list[str]:
    rows = ["| case | device | images/s | step ms | MFU | device peak GiB | planned GiB | JAX | date |",
            "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for name, r in results.items():
        if "step" not in r:
            continue
        s, env = r["step"], r["environment"]
        mfu = None if s.get("mfu") is None else f"{100 * s['mfu']:.1f}% of {s['peak_tflops']:g}"
        rows.append(f"| {name} | {env['num_devices']} x {env['device_kind']} | {s['images_per_s']:.1f} | "
                    f"{s['step_ms']:.2f} | {mfu or '-'} | {_gib(s['peak_device_bytes'])} | "
                    f"{_gib(s['planned_bytes'])} | {env['jax']} | {env['date']} |")
    return rows


def pipeline_rows(results: dict[str, dict]) -> list[str]:
    """The step fed by the host input pipeline (bench --input jpeg): does the host keep up?"""
    cases = {name: r["pipeline_step"] for name, r in results.items() if "pipeline_step" in r}
    if not cases:
        return []
    rows = ["| case | images/s end to end | step only | input wait | host CPU-ms per image | host cores per 2,000 "
            "images/s | note |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, p in cases.items():
        if "skipped" in p:
            rows.append(f"| {name} | - | - | - | - | - | skipped: {p['skipped']} |")
            continue
        rows.append(f"| {name} | {p['images_per_s']:.1f} | {p['step_only_images_per_s']:.1f} | "
                    f"{100 * p['input_wait_share']:.1f}% | {1e3 * p['host_cpu_s_per_image']:.2f} | "
                    f"{2000 * p['host_cpu_s_per_image']:.1f} | {p['host_cpus']} host CPUs |")
    return rows + [""]


def loss_rows(results: dict[str, dict]) -> list[str]:
    rows = ["| impl | N | M | C | ms fwd+bwd | device peak GiB | planned GiB | note |",
            "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results.values():
        for c in r.get("loss", {}).get("cases", []):
            rows.append(f"| {c['impl']} | {c['anchors']} | {c['contrasts']} | {c['classes']} | "
                        f"{_fmt(c.get('ms'), '.2f')} | {_gib(c.get('peak_device_bytes'))} | "
                        f"{_gib(c.get('planned_bytes'))} | {c.get('skipped', '')} |")
    return rows


def loss_share(results: dict[str, dict], step_case: str, anchors: int, classes: int) -> list[str]:
    """The loss at `anchors` x `classes` (each implementation) as a fraction of the step for that many anchors."""
    step = results.get(step_case, {}).get("step")
    if step is None:
        return [f"no {step_case}.json: no step to compare the loss with"]
    views_per_step = step["global_batch"] * step["config"]["num_views"]
    step_ms = step["step_ms"] * anchors / views_per_step
    lines = []
    for r in results.values():
        for c in r.get("loss", {}).get("cases", []):
            if c["anchors"] == anchors and c["classes"] == classes and c.get("ms") is not None:
                lines.append(f"loss share ({c['impl']}, N={anchors}, M={c['contrasts']}, C={classes}): "
                             f"{c['ms']:.2f} ms / {step_ms:.1f} ms = {100 * c['ms'] / step_ms:.2f}% of the step "
                             f"({step_case}: {step['step_ms']:.2f} ms for {views_per_step} views)")
    return lines or [f"no timed loss case at N={anchors}, C={classes}"]


def micro_batch_ratio(results: dict[str, dict], dense_case: str, micro_case: str) -> list[str]:
    """Step time of the micro-batched step over the dense one at the same batch (issue target: at most 1.3)."""
    dense, micro = (results.get(case, {}).get("step") for case in (dense_case, micro_case))
    if dense is None or micro is None:
        return [f"no {dense_case}.json and {micro_case}.json: no micro-batch time ratio"]
    return [f"micro-batched / dense step time ({micro_case} / {dense_case}, global batch {dense['global_batch']}): "
            f"{micro['step_ms']:.2f} / {dense['step_ms']:.2f} ms = {micro['step_ms'] / dense['step_ms']:.3f}"]


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", default="benchmarks/results")
    p.add_argument("--step-case", default="r50_224_bf16_moco", help="the step the loss share is taken of")
    p.add_argument("--anchors", type=int, default=PAPER_ANCHORS)
    p.add_argument("--classes", type=int, default=PAPER_CLASSES)
    args = p.parse_args(argv)
    results = load(args.folder)
    if not results:
        sys.exit(f"no bench JSON in {args.folder}: run bash benchmarks/gpu_suite.sh first (OUT=folder)")
    parts = [*step_rows(results), "", *pipeline_rows(results), *loss_rows(results), "",
             *loss_share(results, args.step_case, args.anchors, args.classes),
             *micro_batch_ratio(results, args.step_case, args.step_case + "_micro32")]
    for extra in ("gpu.txt", "failed.txt"):
        path = os.path.join(args.folder, extra)
        if os.path.exists(path) and os.path.getsize(path):
            with open(path) as f:
                parts += ["", f"{extra}:", f.read().strip()]
    text = "\n".join(parts)
    print(text)
    return text


if __name__ == "__main__":
    main()
