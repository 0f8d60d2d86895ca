"""The pretraining step fed by the product's host input pipeline: `python -m genscl_jax.bench --input jpeg`.

The bench's default input (one batch of noise, reused) times the device alone; this mode shows whether the host
keeps up. Every step takes a new batch from DataSource.training_input over an image folder of synthetic 375x500
JPEGs (genscl_jax.tools.synthetic_photos): the training pipeline itself (tf.data reads, decodes, crops and flips
simclr views as uint8; with --color-augment the step does colour jitter, grayscale and blur; the step always
normalises), laid out on the mesh as training lays it out. In the same process the same compiled step is then
timed on one of those batches reused, so the two figures compare under the same conditions.

Reported: images/s end to end and step-only, the share of wall time spent waiting for the next batch, and the
host's CPU seconds per image (the whole process: tf.data's threads and JAX's dispatch). The host pipeline needs
tensorflow and tensorflow_datasets; where they are missing (the GPU suite's accelerator VM) the case is skipped
with a message saying so, and the JSON says "skipped".
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from typing import Any, Callable

import jax

from genscl_jax import data
from genscl_jax.config import defaults
from genscl_jax.data import device_preprocess
from genscl_jax.tools import synthetic_photos

NEEDS = ("tensorflow", "tensorflow_datasets")


def missing_packages() -> list[str]:
    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def folder_source(args: argparse.Namespace, folder: str) -> data.DataSource:
    """The DataSource of the synthetic image folder, with fixed statistics (nothing to measure)."""
    config = defaults.base_config()
    config.dataset, config.data_dir, config.image_size, config.seed = "image_folder", folder, args.image_size, args.seed
    config.data_mean, config.data_std = (0.5,) * 3, (0.25,) * 3
    config.augment, config.device_color_augment, config.num_views = "simclr", args.color_augment, args.num_views
    synthetic_photos.write_image_folder(folder, num_images=args.input_images, seed=args.seed)
    return data.resolve(config)


def _timed(compiled, state, teacher_variables, next_batch: Callable[[], Any], steps: int):
    """(state, wall s, CPU s, s waiting for batches) of `steps` steps, blocked on at the end."""
    waiting, start, start_cpu = 0.0, time.perf_counter(), time.process_time()
    for _ in range(steps):
        asked = time.perf_counter()
        batch = next_batch()
        waiting += time.perf_counter() - asked
        state, metrics = compiled(state, batch, teacher_variables)
    jax.block_until_ready((state, metrics))
    return state, time.perf_counter() - start, time.process_time() - start_cpu, waiting


def bench_pipeline_step(args: argparse.Namespace, make_bench: Callable[..., Any]) -> dict[str, Any]:
    """make_bench(args, preprocessing=...) -> the bench's StepBenchmark for the step of `args`."""
    missing = missing_packages()
    if missing:
        reason = (f"--input jpeg feeds the step from the product's tf.data pipeline, which needs {' and '.join(NEEDS)};"
                  f" this machine lacks {', '.join(missing)} (install tensorflow-cpu and tensorflow-datasets there, "
                  "or run this case on a host that has them)")
        print(f"skipped: {reason}", flush=True)
        return {"mode": "pipeline_step", "skipped": reason}
    folder = args.input_dir or os.path.join(tempfile.gettempdir(), f"genscl_jax_synthetic_photos_{args.seed}")
    source = folder_source(args, folder)
    # The step is made before its mesh exists here, so its preprocessing is read from the plan directly.
    preprocessing = device_preprocess.for_plan(source.views.train, source.info)
    bench = make_bench(args, preprocessing=preprocessing)
    compiled, compile_seconds = bench.compile(bench.training_compiler_options())
    batches = source.training_input(bench.mesh, source.views.train, batch_size=bench.global_batch,
                                    num_views=args.num_views).batches(0)
    state, teacher_variables = bench.fresh_state(), bench.teacher_variables
    state, *_ = _timed(compiled, state, teacher_variables, lambda: next(batches), max(args.warmup, 1))
    steps = args.steps * args.repeats
    state, wall, cpu, waiting = _timed(compiled, state, teacher_variables, lambda: next(batches), steps)
    fixed = next(batches)
    state, step_wall, *_ = _timed(compiled, state, teacher_variables, lambda: fixed, steps)
    images = steps * bench.global_batch
    return {
        "mode": "pipeline_step", "global_batch": bench.global_batch, "steps": steps,
        "compile_s": round(compile_seconds, 3), "input_images": args.input_images, "folder": folder,
        "preprocessing": {"device_color_augment": preprocessing.color is not None,
                          "blur_prob": preprocessing.blur_prob},
        "images_per_s": round(images / wall, 2), "step_only_images_per_s": round(images / step_wall, 2),
        "input_wait_share": round(waiting / wall, 4),
        "host_cpu_s_per_image": cpu / images, "host_cpus": os.cpu_count(),
        "bytes_per_image_to_device": int(fixed["image"].nbytes // bench.global_batch),
    }


def lines(r: dict[str, Any]) -> list[str]:
    if "skipped" in r:
        return [f"pipeline step: skipped: {r['skipped']}"]
    return [f"pipeline step: global batch {r['global_batch']}, {r['steps']} steps, colour on the device: "
            f"{r['preprocessing']['device_color_augment']} (blur p {r['preprocessing']['blur_prob']})",
            f"  images/s end to end {r['images_per_s']:.1f} vs step only {r['step_only_images_per_s']:.1f}; "
            f"waiting for input {100 * r['input_wait_share']:.1f}% of the time; host "
            f"{1e3 * r['host_cpu_s_per_image']:.2f} CPU-ms per image ({r['host_cpus']} CPUs); "
            f"{r['bytes_per_image_to_device']:,} B per image to the device"]
