"""Memory plans of the product's pretraining step, dense and micro-batched, at the recipes' shapes (BENCHMARKS.md
section 9, README "Fits on").

    python benchmarks/memory_plans.py --out benchmarks/results/plans          # every table (about 40 min on 2 cores)
    python benchmarks/memory_plans.py --out DIR --table cifar                 # one table
    python benchmarks/memory_plans.py --out DIR --batches 64,512,256,1024      # only these per-device batches

Each case is one `python -m genscl_jax.bench --plan-only` process (the step compiled for abstract state and batch:
nothing is allocated or run), its JSON kept in --out, so a rerun skips the cases already planned. The ImageNet
cases run on 8 devices (forced CPU devices here: the SPMD partition accelerators get), the CIFAR ones on one.
Plans are XLA:CPU's compiled.memory_analysis() per device; a GPU compiler's plan differs in detail, so treat them
as estimates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1024**3

# The ImageNet recipe's step (configs/imagenet_resnet50.py): the shape, 8 devices.
IMAGENET = ["--model", "resnet50", "--image-size", "224", "--num-classes", "1000", "--dtype", "bfloat16", "--moco",
            "--queue-size", "65536", "--teacher", "resnet50", "--kd-alpha", "1", "--mix", "mixup_cutmix",
            "--optimizer", "lars"]
# The authors' CIFAR recipe's step (configs/cifar10_resnet50.py), one device.
CIFAR = ["--model", "resnet50", "--image-size", "32", "--num-classes", "10", "--mix", "mixup_cutmix"]
VARIANTS = {"dense": [], "micro": ["--micro-batch-size"], "micro_remat": ["--remat", "blocks", "--micro-batch-size"]}


def cases(table: str, batches: tuple[int, ...] = ()) -> list[tuple[str, int, list[str]]]:
    """(name, devices, bench arguments) of each case of `table` (the imagenet and cifar tables: only the per-device
    batches in `batches`, if given)."""
    found = []
    if table == "imagenet":  # per-device batch 64 .. 512 x {dense, micro 32, micro 32 + remat}
        for batch in _chosen((64, 128, 256, 512), batches):
            for variant, flags in VARIANTS.items():
                extra = flags + ["32"] if flags else []
                found.append((f"imagenet_b{batch}_{variant}", 8, IMAGENET + ["--per-device-batch", str(batch)] + extra))
    elif table == "cifar":  # batch 256 .. 1024 on one device x {dense, micro 128, micro 128 + remat}
        for batch in _chosen((256, 512, 1024), batches):
            for variant, flags in VARIANTS.items():
                extra = flags + ["128"] if flags else []
                found.append((f"cifar_b{batch}_{variant}", 1, CIFAR + ["--per-device-batch", str(batch)] + extra))
    elif table == "fits":  # the recipes at the paper's batch with their loss blocks: which micro-batch fits where
        recipe = IMAGENET + ["--per-device-batch", "512", "--loss-block-size", "1024"]
        for micro in (16, 32, 64, 128, 256):
            for remat in ("none", "blocks"):
                found.append((f"fits_imagenet_m{micro}_{remat}", 8, recipe + ["--micro-batch-size", str(micro),
                                                                              "--remat", remat]))
        for micro in (128, 256, 512):
            for remat in ("none", "blocks"):
                found.append((f"fits_cifar_m{micro}_{remat}", 1, CIFAR + ["--per-device-batch", "1024",
                                                                         "--micro-batch-size", str(micro),
                                                                         "--remat", remat]))
    else:
        raise SystemExit(f"unknown table {table!r}; tables: imagenet, cifar, fits")
    return found


def _chosen(batches: tuple[int, ...], wanted: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(b for b in batches if b in wanted) if wanted else batches


def plan(name: str, devices: int, argv: list[str], out: str) -> dict:
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        env = dict(os.environ)
        if devices > 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
        command = [sys.executable, "-m", "genscl_jax.bench", *argv, "--plan-only", "--json", path]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, cwd=ROOT, env=env, check=True)
    with open(path) as f:
        return json.load(f)["step"]


def row(name: str, step: dict) -> str:
    plan = step["memory_plan"]
    c = step["config"]
    return (f"| {name} | {step['num_devices']} | {c['per_device_batch']} | {c['micro_batch_size'] or '-'} | "
            f"{c['remat']} | {c['loss_block_size'] or '-'} | {step['planned_bytes'] / GIB:.2f} | "
            f"{plan['temp'] / GIB:.2f} | {plan['argument'] / GIB:.2f} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for each case's JSON (kept: a rerun skips planned cases)")
    p.add_argument("--table", action="append", choices=("imagenet", "cifar", "fits"),
                   help="which table (repeatable; default: all)")
    p.add_argument("--batches", default="", help="comma-separated per-device batches of the imagenet and cifar "
                   "tables to plan (default: all)")
    args = p.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(",") if b)
    os.makedirs(args.out, exist_ok=True)
    lines = []
    for table in args.table or ("imagenet", "cifar", "fits"):
        lines += ["", f"{table}:", "| case | devices | per-device batch | micro-batch per device | remat | loss block "
                  "| planned GiB per device | temporaries GiB | arguments GiB |",
                  "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
        for name, devices, case_argv in cases(table, batches):
            lines.append(row(name, plan(name, devices, case_argv, args.out)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
