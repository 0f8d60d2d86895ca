"""The plan command's inputs, without compiling anything: target names as Cloud TPU and the GPU names define them,
the one-line errors (unknown target, missing or mismatched compiler) and the candidates it tries when a step does
not fit. The compiles themselves are tests/test_plan.py's."""

import os
import subprocess
import sys

import pytest

from conftest import make_tiny_config, write_config
from genscl_jax.runtime import parallel
from genscl_jax.tools import accelerators, deviceless, plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name, chips, hosts, topology", [
    ("v4-8", 4, 1, "v4:2x2x1"), ("v4-32", 16, 4, "v4:2x2x4"), ("v5p-8", 4, 1, "v5p:2x2x1"),
    ("v5e-1", 1, 1, "v5e:1x1"), ("v5litepod-4", 4, 1, "v5e:2x2"), ("v5e-8", 8, 1, "v5e:2x4"),
    ("v5e-16", 16, 4, "v5e:4x4"), ("v6e-8", 8, 1, "v6e:2x4"), ("v6e-256", 256, 64, "v6e:16x16"),
    ("h100-80gbx8", 8, 1, "1x1x8"), ("a100-40gbx8,hosts=2", 16, 2, "1x2x8"), ("l4x1", 1, 1, "1x1x1")])
def test_targets_resolve_as_cloud_tpu_and_the_gpu_names_define_them(name, chips, hosts, topology):
    target = accelerators.parse_target(name)
    assert (target.num_devices, target.hosts, target.topology) == (chips, hosts, topology)
    assert target.devices_per_host * target.hosts == chips


@pytest.mark.parametrize("name", ["v4-6", "v5e-3", "v7-8", "h100x8", "h100-80gb", "tpu"])
def test_unknown_targets_are_refused_naming_the_known_ones(name):
    with pytest.raises(accelerators.TargetError, match=f"unknown target '{name}'"):
        accelerators.parse_target(name)


def test_the_gpu_description_carries_the_published_facts():
    text = accelerators.gpu_target_config(accelerators.parse_target("h100-80gbx8"))
    assert "core_count: 132" in text and "major: 9" in text and 'device_description_str: "NVIDIA H100' in text


def run_plan(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "genscl_jax.plan", "--config", write_config(tmp_path / "tiny.py"),
                           *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


@pytest.mark.slow
def test_an_unknown_target_is_one_line_with_no_traceback(tmp_path):
    done = run_plan(tmp_path, "--target", "v5e-3")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("plan:")]
    assert "unknown target 'v5e-3'" in line and "v5e-4" in line


@pytest.mark.parametrize("versions, expected", [
    ({"libtpu": None}, "needs libtpu, which is not installed; run: pip install \"jax[tpu]=="),
    ({"libtpu": "0.0.1"}, "libtpu 0.0.1 does not match jax"),
])
def test_a_missing_or_mismatched_compiler_is_one_line_naming_the_fix(tmp_path, monkeypatch, capsys, versions,
                                                                      expected):
    real = deviceless._version
    monkeypatch.setattr(deviceless, "_version", lambda package: versions.get(package, real(package)))
    monkeypatch.setattr(deviceless, "target_mesh", lambda target: pytest.fail("compiled despite the problem"))
    assert plan.main(["--config", write_config(tmp_path / "tiny.py"), "--target", "v5e-4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("plan: ") and expected in err


def test_any_libtpu_takes_a_libtpu_other_than_jaxs_pin_but_never_a_missing_one(monkeypatch):
    real = deviceless._version
    monkeypatch.setattr(deviceless, "_pinned_libtpu", lambda: "0.0.42")
    monkeypatch.setattr(deviceless, "_version", lambda package: "0.0.52" if package == "libtpu" else real(package))
    assert "pass --any-libtpu" in deviceless.compiler_problem("tpu")
    assert deviceless.compiler_problem("tpu", any_libtpu=True) is None
    args, _ = plan.parse_args(["--config", "c.py", "--target", "v6e-8", "--any-libtpu"])
    assert args.any_libtpu
    monkeypatch.setattr(deviceless, "_version", lambda package: None if package == "libtpu" else real(package))
    assert "not installed" in deviceless.compiler_problem("tpu", any_libtpu=True)


def test_a_missing_cuda_plugin_names_the_fix(monkeypatch):
    monkeypatch.setattr(deviceless, "_version", lambda package: None if "cuda" in package else "0.10.2")
    problem = deviceless.compiler_problem("gpu")
    assert "CUDA plugin" in problem and 'pip install "jax[cuda12-local]==' in problem


def test_a_recipe_and_its_overrides_load_from_a_python_call(monkeypatch):
    # A notebook's or a test's call: the process's argv holds no --config.KEY flags (config_flags looked there).
    monkeypatch.setattr(sys, "argv", ["python"])
    config = plan.load_config(os.path.join(REPO, "configs/study_fashion_mnist.py:scarce,tiny"),
                              ["--config.mode=supervised", "--config.seed=3"])
    assert (config.mode, config.seed, config.train_subset) == ("supervised", 3, 3)
    with pytest.raises(plan.PlanError, match="no_such_key"):
        plan.load_config(os.path.join(REPO, "configs/quickstart.py"), ["--config.no_such_key=1"])


def test_candidates_go_from_the_smallest_change_up():
    config = make_tiny_config(batch_size=64, num_views=2)
    found = plan.candidates(config, num_devices=4)
    assert found[0] == {"loss_block_size": 16}  # the same loss, in blocks of rows
    assert [c.get("micro_batch_size") for c in found[1:5]] == [32, 16, 8, 4]
    assert found[-1]["remat"] == "blocks"
    assert all(64 % c["micro_batch_size"] == 0 and c["micro_batch_size"] % 4 == 0 for c in found[1:])


def test_the_linear_evaluations_candidates_halve_the_batches_that_do_not_fit():
    config = make_tiny_config(eval_batch_size=64, **{"linear_eval.batch_size": 32})
    assert plan.linear_eval_candidates(config, 4, {"linear_eval_features"}) == [
        {"eval_batch_size": 32}, {"eval_batch_size": 16}, {"eval_batch_size": 8}, {"eval_batch_size": 4}]
    both = plan.linear_eval_candidates(config, 4, {"linear_eval_features", "linear_eval"})
    assert both[0] == {"eval_batch_size": 32, "linear_eval.batch_size": 16}
    assert both[-1] == {"eval_batch_size": 8, "linear_eval.batch_size": 4}  # one example per device, no fewer
    assert plan.linear_eval_candidates(config, 4, {"pretrain"}) == []


def test_the_platform_of_a_mesh_is_its_devices():
    assert parallel.mesh_platform(parallel.create_mesh()) == "cpu"


def test_compute_ops_counts_convolutions_by_type_and_layout_and_the_layout_changes():
    from genscl_jax.tools import hlo_audit

    hlo = "\n".join([
        '  %c = (bf16[8,56,56,64]{3,2,1,0}, u8[0]{0}) custom-call(%a, %b), window={size=3x3}, '
        'dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward"',
        "  %d = f32[8,1000]{1,0} dot(%x, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}",
        "  %t = f32[64,8]{1,0} transpose(%y), dimensions={1,0}",
        "  ROOT %k = bf16[8,64]{1,0} copy(%z)",
        '  %n = f32[8]{0} custom-call(%q), custom_call_target="SomethingElse"'])
    found = hlo_audit.compute_ops(hlo)
    assert found["convolution"] == {"bf16": 1} and found["conv_layouts"] == {"b01f_o01i->b01f": 1}
    assert found["dot"] == {"f32": 1} and found["transpose"] == {"f32": 1} and found["copy"] == {"bf16": 1}


def test_standalone_transposes_are_the_gpus_own_transpose_kernels_with_their_bytes():
    from genscl_jax.tools import hlo_audit

    hlo = "\n".join([
        "%wrapped_transpose_computation.3 (param_0: f32[3,3,64,128]) -> f32[128,3,3,64] {",
        "  %param_0 = f32[3,3,64,128]{3,2,1,0} parameter(0)",
        "  ROOT %t = f32[128,3,3,64]{3,2,1,0} transpose(%param_0), dimensions={3,0,1,2}",
        "}",
        "%fused_computation.9 (p: bf16[8,4,4,16]) -> bf16[8,16,4,4] {",
        "  %p = bf16[8,4,4,16]{3,2,1,0} parameter(0)",
        "  ROOT %u = bf16[8,16,4,4]{3,2,1,0} transpose(%p), dimensions={0,3,1,2}",  # fused: no pass of its own
        "}",
        "ENTRY %main (a: bf16[2,8]) -> bf16[8,2] {",
        "  ROOT %v = bf16[8,2]{1,0} transpose(%a), dimensions={1,0}",  # the entry's: not a GPU kernel of its own
        "}"])
    (found,) = hlo_audit.standalone_transposes(hlo)
    assert (found.dtype, found.dims, found.filter_layout) == ("f32", (128, 3, 3, 64), True)
    assert found.bytes == 4 * 128 * 3 * 3 * 64


def test_a_step_the_compiler_refused_never_fits_whatever_the_memory_says():
    """libtpu's v4 target refused the dense ImageNet step at 20.61 GiB, under the 32 GiB per chip of our table: the
    compiler judged it against its own figure, so neither the plan nor suggest() may count it as fitting."""
    gib = accelerators.GIB
    planned = {"planned_bytes": int(20.61 * gib)}
    assert plan.fits(planned, 32 * gib) and not plan.fits(planned, 16 * gib)
    assert not plan.fits({**planned, "refused_by_compiler": "RESOURCE_EXHAUSTED: Ran out of memory on HBM"}, 32 * gib)
