"""`python -m genscl_jax.plan`: the tiny config's steps compiled for a TPU slice and for GPUs from this CPU machine,
with no device, through libtpu and the CUDA plugin (the plan-tpu / plan-gpu extras).

Those compilers live in .venv-plan (.ci/plan_venv: the test venv plus libtpu and the CUDA plugin), not in the test
venv, so that no other test sees a TPU or GPU plugin; .ci/run runs this file there. Elsewhere it skips, saying how.
"""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import pytest

from conftest import make_tiny_config, write_config
from genscl_jax import data
from genscl_jax.tools import accelerators, deviceless, hlo_audit, plan_steps

_HOW = ("run: .ci/plan_venv && .venv-plan/bin/python -m pytest -n 2 tests/test_plan.py (the test venv plus "
        "libtpu and the CUDA plugin)")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                 reason=f"libtpu (the plan-tpu extra) is not installed here; {_HOW}")]
_NO_CUDA_PLUGIN = deviceless.compiler_problem("gpu")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("target", "device_kind", "num_devices", "global_batch", "device_memory_bytes", "planned_bytes", "fits",
        "flops_per_step", "collectives", "compile_s", "suggestion")
# A batch whose activations dominate the tiny network's memory on a GPU (on a TPU, XLA keeps this model's temporaries
# small and micro-batches only add code: BENCHMARKS.md section 11.3): dense 76 MiB, micro-batches of 32: 30 MiB.
LARGE = {"batch_size": 512, "width_multiplier": 0.5}


def plan(tmp_path, target, *flags, name="plan"):
    """The command's exit status, output lines and JSON result."""
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "PYTHONPATH": REPO}
    done = subprocess.run([sys.executable, "-m", "genscl_jax.plan", "--config", write_config(tmp_path / "tiny.py"),
                           "--target", target, "--json", str(out), *flags],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines, json.loads(out.read_text()) if out.exists() else None, done.stderr


def check_tiny_plan(tmp_path, target, device_kind):
    rc, lines, result, stderr = plan(tmp_path, target)
    assert rc == 0, stderr[-2000:]
    assert all(key in result for key in KEYS)
    assert result["device_kind"] == device_kind and result["fits"] and result["suggestion"] is None
    assert result["num_devices"] == (2 if target.endswith("x2") else 4)
    assert 0 < result["planned_bytes"] < result["device_memory_bytes"]
    assert result["flops_per_step"] > 0 and result["global_batch"] == 8
    # Data parallel: the gradients are all-reduced across the devices.
    assert any(c["kind"] == "all-reduce" and c["count"] > 0 and c["bytes"] > 0 for c in result["collectives"])
    assert any("fits" in line for line in lines)


def test_the_tiny_pretraining_step_compiles_for_a_v5e_4_slice_and_fits(tmp_path):
    check_tiny_plan(tmp_path, "v5e-4", "TPU v5 lite")


def test_pretrain_and_eval_compiles_the_linear_evaluations_programs_too(tmp_path):
    """Its second stage: the encoder over an evaluation batch, and the classifier's step, which runs the frozen
    encoder on its views (crop_flip, the default) or reads stored features (no augmentation, precomputed)."""
    per_image = {}
    for name, flags in (("views", ()), ("stored", ("--config.linear_eval.augment=none",
                                                    "--config.linear_eval.precompute_features=True"))):
        rc, _, result, stderr = plan(tmp_path, "v5e-4", "--config.mode=pretrain_and_eval", *flags, name=name)
        assert rc == 0, stderr[-2000:]
        steps = {step["step"]: step for step in result["steps"]}
        assert list(steps) == ["pretrain", "linear_eval_features", "linear_eval"] and result["fits"]
        assert (steps["linear_eval_features"]["global_batch"], steps["linear_eval"]["global_batch"]) == (64, 64)
        per_image[name] = {k: s["flops_per_source_image"] for k, s in steps.items()}
    features = per_image["views"]["linear_eval_features"]
    assert features > 0 and per_image["views"]["linear_eval"] > features  # the encoder's forward, and the classifier
    assert per_image["stored"]["linear_eval"] < features / 10  # the classifier alone


@pytest.mark.skipif(_NO_CUDA_PLUGIN is not None, reason=f"{_NO_CUDA_PLUGIN}; or {_HOW}")
def test_the_tiny_pretraining_step_compiles_for_two_h100s_and_fits(tmp_path):
    check_tiny_plan(tmp_path, "h100-80gbx2", "NVIDIA H100 80GB HBM3")


@pytest.mark.skipif(_NO_CUDA_PLUGIN is not None, reason=f"{_NO_CUDA_PLUGIN}; or {_HOW}")
@pytest.mark.long(minutes=4)  # the refused plan, its candidates and the applied one: the file's longest
def test_a_batch_too_large_for_the_memory_is_refused_with_a_suggestion_that_fits(tmp_path):
    flags = [f"--config.{k}={v}" for k, v in LARGE.items()]
    rc, _, dense, _ = plan(tmp_path, "h100-80gbx2", *flags, "--no-suggest", name="dense")
    assert rc == 0 and dense["fits"]
    # A memory the dense step does not fit and two micro-batches should.
    memory_gb = dense["planned_bytes"] * 0.8 / accelerators.GIB
    rc, lines, refused, stderr = plan(tmp_path, "h100-80gbx2", *flags, f"--device-memory-gb={memory_gb}",
                                      name="refused")
    assert rc == 3 and not refused["fits"] and refused["suggestion"], stderr[-2000:]
    assert lines[-1] == f"does not fit; the smallest change that fits: {refused['suggestion']}"
    rc, _, applied, _ = plan(tmp_path, "h100-80gbx2", *flags, f"--device-memory-gb={memory_gb}",
                             *refused["suggestion"].split(), name="applied")
    assert rc == 0 and applied["fits"] and applied["planned_bytes"] <= memory_gb * accelerators.GIB


@pytest.mark.skipif(_NO_CUDA_PLUGIN is not None, reason=f"{_NO_CUDA_PLUGIN}; or {_HOW}")
def test_a_linear_evaluation_too_large_for_the_memory_is_refused_with_its_own_suggestion(tmp_path):
    """The training step fits and the linear evaluation's two programs do not (an encoder pass over 4,096 images at
    once): the candidates are the linear evaluation's batches, compiled alone, not the training step's micro-batches,
    which change nothing there."""
    flags = ["--config.mode=pretrain_and_eval", "--config.eval_batch_size=4096", "--config.linear_eval.batch_size=4096",
             "--config.width_multiplier=0.5", "--device-memory-gb=0.0390625"]  # 40 MiB per device
    rc, lines, refused, stderr = plan(tmp_path, "h100-80gbx2", *flags, name="refused")
    assert rc == 3, stderr[-2000:]
    fits = {step["step"]: step["fits"] for step in refused["steps"]}
    assert fits == {"pretrain": True, "linear_eval_features": False, "linear_eval": False}, refused["steps"]
    assert {c["steps"] == ["linear_eval_features", "linear_eval"] for c in refused["candidates"]} == {True}
    assert set(refused["suggestion"].split()) == {"--config.eval_batch_size=2048",
                                                  "--config.linear_eval.batch_size=2048"}, refused["candidates"]
    assert lines[-1] == f"does not fit; the smallest change that fits: {refused['suggestion']}"
    rc, _, applied, stderr = plan(tmp_path, "h100-80gbx2", *flags, *refused["suggestion"].split(), name="applied")
    assert rc == 0 and applied["fits"], stderr[-2000:]


# Custom calls only XLA:CPU emits (its runtime's, YNNPACK's, XNNPACK's, oneDNN's).
_CPU_ONLY = ("cpu", "ynn", "xnn", "onednn")


def _tiny_tpu_steps(config, monkeypatch):
    """The step's optimised HLO compiled here for a v5e-4 slice, then again with the host's platform forced to TPU
    (both from this one line, so that the source locations in the metadata agree)."""
    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)  # TPU executables have no place in the CPU tests' cache
    mesh = deviceless.target_mesh(accelerators.parse_target("v5e-4"))
    texts = []
    try:
        for forced in (False, True):
            if forced:
                monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
            (step,) = plan_steps.lower_steps(config, mesh, data.resolve(config))
            texts.append(step.lowered.compile().as_text())
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)
    return texts


def test_a_tpu_step_compiled_from_this_cpu_host_is_the_program_a_tpu_host_compiles(monkeypatch):
    """Every platform choice comes from the mesh: the micro-batched step (where the CPU path would swap in
    canonical gradient convolutions and CPU compiler options) compiled here for a TPU equals the one compiled with
    the platform forced to TPU, and holds no CPU-only custom call."""
    here, forced = _tiny_tpu_steps(make_tiny_config(micro_batch_size=4, remat="blocks"), monkeypatch)
    targets = {line.split('custom_call_target="')[1].split('"')[0] for line in here.splitlines()
               if 'custom_call_target="' in line}
    assert not [t for t in targets if any(word in t.lower() for word in _CPU_ONLY)]
    assert here == forced
    assert hlo_audit.collectives(here)  # a real sharded TPU program


@pytest.mark.skipif(_NO_CUDA_PLUGIN is not None, reason=f"{_NO_CUDA_PLUGIN}; or {_HOW}")
def test_the_gpu_step_with_mixing_and_moco_never_gathers_images_and_counts_every_micro_batch(tmp_path):
    """Mixup-or-CutMix and MoCo, dense and in micro-batches of two images per GPU. The partners arrive by
    collective-permute (parallel.ExampleLayout.rolled), never by all-to-all. XLA:GPU resolved the mixing
    `lax.cond` by all-gathering its mixed images onto every GPU (the micro-batch's, or in the dense step the whole
    batch's, after which the dense step ran replicated: BENCHMARKS.md section 11.2) until they were constrained to
    stay sharded by examples (step_inputs.StepInputs.layout). XLA's cost analysis counts the micro-batch loop's
    body once: the plan counts the step's FLOPs with the loop off, so both report the same work per image."""
    image = (16, 16, 3)  # a size no activation or weight of the tiny network ends in
    per_image = {}
    for micro_batch_size in (0, 4):
        settings = {"image_size": image[0], "batch_size": 16, "micro_batch_size": micro_batch_size,
                    "mix.kind": "mixup_cutmix", "moco.enabled": True, "moco.queue_size": 64}
        hlo_dir = tmp_path / f"hlo{micro_batch_size}"
        rc, _, result, stderr = plan(tmp_path, "h100-80gbx2", *[f"--config.{k}={v}" for k, v in settings.items()],
                                     "--no-suggest", "--hlo-dir", str(hlo_dir), name=f"micro{micro_batch_size}")
        assert rc == 0 and result["fits"], stderr[-2000:]
        found = hlo_audit.collectives((hlo_dir / "pretrain.hlo.txt").read_text())
        gathered = [c.describe() for c in found if c.kind == "all-gather" and hlo_audit.image_shaped(c, image)]
        assert not gathered, (micro_batch_size, gathered)
        # Nor are they resharded: a jnp.roll of the sharded batch went by all-to-all (6 dense, 18 micro-batched).
        assert not [c.describe() for c in found if c.kind == "all-to-all"], micro_batch_size
        # The partners still arrive, by collective-permute of one image per GPU per view; gradients are all-reduced.
        assert [c for c in found if c.kind == "collective-permute" and hlo_audit.image_shaped(c, image)]
        assert any(c.kind == "all-reduce" for c in found)
        per_image[micro_batch_size] = result["steps"][0]["flops_per_source_image"]
    assert per_image[4] == pytest.approx(per_image[0], rel=1e-6), per_image  # a third of it before: the body once


@pytest.mark.long(minutes=3)
def test_the_tpu_step_all_gathers_no_class_indices(tmp_path):
    """The online probe's top-1 and the teacher agreement, written as argmaxes, made XLA:TPU all-gather an int32
    [rows, classes] index array across the batch: 2 per step in this program, 179 at the ImageNet recipe's shape
    (BENCHMARKS.md section 11.2). Their max-only form (diagnostics.dominant_class_agreement) stays on each chip's
    rows. The ImageNet recipe's :runlocal size (probe and teacher on), where the tiny config showed none."""
    hlo_dir = tmp_path / "hlo"
    done = subprocess.run([sys.executable, "-m", "genscl_jax.plan", "--config", "configs/imagenet_resnet50.py:runlocal",
                           "--config.mode=pretrain", "--target", "v5e-4", "--no-suggest", "--hlo-dir", str(hlo_dir)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, cwd=REPO,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    found = hlo_audit.collectives((hlo_dir / "pretrain.hlo.txt").read_text())
    indices = [c.describe() for c in found if c.kind == "all-gather" and any(d == "s32" for d, _ in c.shapes)]
    assert not indices, indices
    assert [c for c in found if c.kind == "all-gather"]  # the loss still gathers the projections and labels


def test_a_step_the_tpu_compiler_refuses_for_its_memory_is_reported_as_not_fitting(tmp_path):
    """XLA:TPU does not return a plan for a program larger than the chip's memory: it refuses to compile it
    (RESOURCE_EXHAUSTED). The dense ImageNet step on v4-8 and v5e-8 did so, and the plan stopped with that
    traceback. It is the answer the plan exists to give: "does not fit", with the compiler's figure."""
    rc, lines, result, stderr = plan(tmp_path, "v5e-1", "--config.mode=pretrain", "--config.batch_size=65536",
                                     "--no-suggest")
    assert rc == 3, stderr[-2000:]
    step = result["steps"][0]
    assert not result["fits"] and not step["fits"] and "RESOURCE_EXHAUSTED" in step["refused_by_compiler"]
    assert step["planned_bytes"] > result["device_memory_bytes"]  # the compiler's own figure, read from its message
    assert step["flops_per_step"] > 0 and step["collectives"] == []
    assert any("does NOT fit: the compiler refused it" in line for line in lines), lines
