"""Collective audit: every collective of the product's compiled pretraining step on an N-device mesh, with bytes.

    python benchmarks/collective_audit.py                        # ImageNet recipe shape, 8 forced CPU devices
    python benchmarks/collective_audit.py --model resnet18 --image-size 40 --json -   # a smaller program

The step is the one training compiles (pretrain.build_program) for configs/imagenet_resnet50.py with its model,
MoCo queue, Mixup-CutMix and a teacher of the recipe's architecture, at `--per-device-batch` images per device and
1000 classes. Only the program is compiled: the state, batch and teacher are abstract shapes, nothing is allocated
or run, so ResNet-50 at 224 px audits on a laptop. With a CPU backend the device count is forced through
XLA_FLAGS before JAX starts (the SPMD partitioning is the one accelerators get; the audit runs anywhere).
Bytes are per device per step (genscl_jax/tools/hlo_audit.py says how each kind is counted).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=8, help="mesh size (CPU: forced host devices)")
    p.add_argument("--per-device-batch", type=int, default=2, help="source images per device")
    p.add_argument("--model", default=None, help="default: the recipe's (resnet50)")
    p.add_argument("--width", type=float, default=None, help="width multiplier; default: the recipe's")
    p.add_argument("--image-size", type=int, default=None, help="default: the recipe's (224)")
    p.add_argument("--queue-size", type=int, default=None, help="default: the recipe's (65536)")
    p.add_argument("--head-dim", type=int, default=None, help="projection width; default: the recipe's")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--mix", default=None, help="mixing kind; default: the recipe's (mixup_cutmix)")
    p.add_argument("--no-teacher", action="store_true", help="audit without the distillation teacher")
    p.add_argument("--no-moco", action="store_true", help="audit without the EMA key encoder and queue")
    p.add_argument("--micro-batch-size", type=int, default=0,
                   help="source images per micro-batch per device (config.micro_batch_size = this x devices)")
    p.add_argument("--json", default=None, help="write the audit as JSON to this file ('-': stdout)")
    return p.parse_args(argv)


def force_cpu_devices(count: int) -> None:
    """Before JAX starts: give a CPU backend `count` devices (accelerators keep theirs)."""
    flag = f"--xla_force_host_platform_device_count={count}"
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


def recipe_config(args: argparse.Namespace):
    from configs import imagenet_resnet50

    config = imagenet_resnet50.get_config()
    config.batch_size = args.per_device_batch * args.devices
    config.micro_batch_size = args.micro_batch_size * args.devices
    config.num_train_steps = 1000
    for key, value in (("model", args.model), ("width_multiplier", args.width), ("image_size", args.image_size),
                       ("moco.queue_size", args.queue_size), ("head.output_dim", args.head_dim),
                       ("mix.kind", args.mix)):
        if value is not None:
            *parents, leaf = key.split(".")
            target = config
            for parent in parents:
                target = target[parent]
            target[leaf] = value
    if args.no_teacher:
        config.kd.alpha = 0.0
    if args.no_moco:
        config.moco.enabled = False
    return config


def audit(args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp

    from genscl_jax import data
    from genscl_jax.data import device_preprocess, registry, views
    from genscl_jax.runtime import parallel
    from genscl_jax.tools import hlo_audit
    from genscl_jax.trainers import pretrain, teachers

    if len(jax.devices()) < args.devices:
        raise SystemExit(f"need {args.devices} devices, have {len(jax.devices())}: on a CPU, run this script "
                         "directly (it forces the count) or set XLA_FLAGS=--xla_force_host_platform_device_count")
    mesh = parallel.create_mesh(jax.devices()[:args.devices])
    config = recipe_config(args)
    channels = 3
    spec = data.DatasetInfo(args.num_classes, 1_281_167, 50_000, channels, (0.5,) * channels, (0.25,) * channels)
    teacher = None
    if config.kd.alpha > 0:
        module = teachers.teacher_module(config, args.num_classes)
        sample = jnp.zeros((1, config.image_size, config.image_size, channels))
        teacher = teachers.Teacher(module, jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), sample,
                                                                                train=False)))
    # The recipe's dataset: what its step does to the uint8 views is what training's does.
    preprocessing = device_preprocess.for_plan(views.from_config(config, registry.get("imagenet2012")).train, spec)
    program = pretrain.build_program(config, mesh, spec, spec.num_train // config.batch_size,
                                     preprocessing=preprocessing, teacher=teacher)
    state = program.state_shapes()
    batch = {"image": jax.ShapeDtypeStruct((config.batch_size, config.num_views, config.image_size,
                                            config.image_size, channels), jnp.uint8),
             "label": jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)}
    started = time.time()
    compiled = program.jit().lower(state, batch, teacher.variables if teacher else None).compile()
    compile_seconds = time.time() - started
    found = hlo_audit.collectives(compiled.as_text())
    image = (config.image_size, config.image_size, channels)
    return {
        "shape": {"model": config.model, "image_size": config.image_size, "devices": args.devices,
                  "per_device_batch": args.per_device_batch, "global_batch": config.batch_size,
                  "views": config.num_views, "queue": config.moco.queue_size if config.moco.enabled else 0,
                  "classes": args.num_classes, "mix": config.mix.kind, "teacher": teacher is not None,
                  "dtype": config.dtype, "micro_batch_size": config.micro_batch_size},
        "backend": jax.default_backend(), "jax": jax.__version__, "compile_seconds": round(compile_seconds, 1),
        # Mixing permutes the normalised float32 views.
        "local_image_shard_bytes": args.per_device_batch * config.num_views * 4 * image[0] * image[1] * image[2],
        "collectives": [{"kind": c.kind, "shapes": c.describe(), "bytes": c.bytes,
                         "image_shaped": hlo_audit.image_shaped(c, image)} for c in found],
        "totals": hlo_audit.summarize(found),
    }


def print_table(result: dict) -> None:
    print("| # | collective | result shape(s) on one device | bytes per device per step |")
    print("|---|---|---|---|")
    for i, c in enumerate(result["collectives"]):
        shapes = c["shapes"] if len(c["shapes"]) < 90 else c["shapes"][:87] + "..."
        print(f"| {i} | {c['kind']}{' (image)' if c['image_shaped'] else ''} | {shapes} | {c['bytes']:,} |")
    for kind, t in result["totals"].items():
        print(f"total {kind}: {t['count']} ops, {t['bytes']:,} bytes")


def main(argv=None) -> None:
    args = parse_args(argv)
    force_cpu_devices(args.devices)
    sys.path.insert(0, ROOT)
    result = audit(args)
    if args.json == "-":
        print(json.dumps(result))
        return
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
