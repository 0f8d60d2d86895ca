"""The benchmark: quick and loss-only modes run and report, bench stays free of TensorFlow / clu, the GPU suite's
commands parse, and the PyTorch reference computes our loss and model."""

import json
import os
import shlex
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genscl_jax import models
from genscl_jax.objectives import losses
from genscl_jax.tools import bench

ROOT = os.path.join(os.path.dirname(__file__), "..")
# ml_collections is allowed: the bench builds its step from config_defaults.base_config(), as training does.
BANNED = ("tensorflow", "tensorflow_datasets", "clu")

# One fresh process runs `python -m genscl_jax.bench` three times (quick step, tiny loss-only, the quick step's
# monitor cost), then lists the banned
# top-level modules it has imported. A fresh process: this test session itself imports TensorFlow elsewhere.
_SCRIPT = """
import json, runpy, sys
for argv in ({step!r}, {loss!r}, {monitor!r}):
    sys.argv = ["genscl_jax.bench", *argv]
    runpy.run_module("genscl_jax.bench", run_name="__main__", alter_sys=True)
print("BANNED " + json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({banned!r}))))
"""


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    step_json, loss_json, monitor_json = str(out / "step.json"), str(out / "loss.json"), str(out / "monitor.json")
    script = _SCRIPT.format(step=["--quick", "--steps", "3", "--repeats", "2", "--json", step_json],
                            loss=["--quick", "--loss-only", "--anchors", "16,40", "--queue", "24",
                                  "--loss-impl", "dense,chunked", "--loss-block", "16", "--json", loss_json],
                            monitor=["--quick", "--monitor-cost", "--steps", "1", "--repeats", "2", "--json",
                                     monitor_json],
                            banned=BANNED)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(step_json) as f, open(loss_json) as g, open(monitor_json) as h:
        return {"stdout": proc.stdout, "step": json.load(f), "loss": json.load(g), "monitor": json.load(h),
                "folder": str(out)}


@pytest.mark.slow
def test_quick_mode_reports_images_per_second_and_step_time(bench_run):
    step = bench_run["step"]["step"]
    assert step["images_per_s"] > 0 and step["step_ms"] > 0
    assert step["global_batch"] == bench.QUICK["per_device_batch"] * jax.device_count()
    assert step["flops_per_step"] > 0 and step["planned_bytes"] > 0 and np.isfinite(step["loss_after_warmup"])
    assert bench_run["step"]["environment"]["jax"] == jax.__version__
    assert "images/s" in bench_run["stdout"] and "step ms" in bench_run["stdout"]


@pytest.mark.slow
def test_monitor_cost_mode_times_the_step_with_and_without_the_probe_and_diagnostics(bench_run):
    cost = bench_run["monitor"]["monitor_cost"]
    assert cost["on"]["step_ms"] > 0 and cost["off"]["step_ms"] > 0 and cost["ratio_of_medians"] > 0
    assert len(cost["on"]["step_ms_rounds"]) == len(cost["off"]["step_ms_rounds"]) == 2
    assert cost["flops_ratio"] > 1.0  # the probe's update and the diagnostics are real work
    # The encoder's update is the same with and without them: the same loss after the warm-up steps.
    assert cost["on"]["loss_after_warmup"] == cost["off"]["loss_after_warmup"]
    low, high = cost["median_paired_ratio_95ci"]
    assert low <= cost["median_paired_ratio"] <= high
    assert "monitor cost" in bench_run["stdout"] and "95% interval" in bench_run["stdout"]


def test_median_interval_brackets_the_median_and_narrows_with_more_rounds():
    from genscl_jax.tools import measure
    rng = np.random.default_rng(0)
    few, many = list(1.02 + 0.05 * rng.standard_normal(20)), list(1.02 + 0.05 * rng.standard_normal(500))
    for values in (few, many):
        low, high = measure.median_interval(values)
        assert low <= float(np.median(values)) <= high
    assert measure.median_interval(few) == measure.median_interval(few)  # deterministic
    def width(values):
        low, high = measure.median_interval(values)
        return high - low

    assert width(many) < width(few) / 3  # about 1 / sqrt(25) as wide
    low, high = measure.median_interval(many)
    assert low < 1.02 < high and high - low < 0.02


@pytest.mark.slow
def test_loss_only_mode_at_a_tiny_size(bench_run):
    cases = bench_run["loss"]["loss"]["cases"]
    assert [(c["impl"], c["anchors"], c["contrasts"]) for c in cases] == [
        ("dense", 16, 40), ("dense", 40, 64), ("chunked", 16, 40), ("chunked", 40, 64)]
    for c in cases:
        assert c["ms"] > 0 and c["planned_bytes"] > 0 and c["grad_finite"] and c["fits_budget"]
    dense, chunked = cases[:2], cases[2:]
    np.testing.assert_allclose([c["loss"] for c in chunked], [c["loss"] for c in dense], rtol=1e-5)


@pytest.mark.slow
def test_bench_imports_neither_tensorflow_nor_clu(bench_run):
    line = next(row for row in bench_run["stdout"].splitlines() if row.startswith("BANNED "))
    assert json.loads(line[len("BANNED "):]) == []


@pytest.mark.slow
def test_suite_summary_gives_the_table_rows_and_the_loss_share(bench_run):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import summarize_suite

    text = summarize_suite.main([bench_run["folder"], "--step-case", "step", "--anchors", "40", "--classes", "10"])
    step, env = bench_run["step"]["step"], bench_run["step"]["environment"]
    assert f"| step | {env['num_devices']} x {env['device_kind']} | {step['images_per_s']:.1f} | " in text
    views = step["global_batch"] * 2
    for case in bench_run["loss"]["loss"]["cases"]:
        assert f"| {case['impl']} | {case['anchors']} | {case['contrasts']} | 10 | {case['ms']:.2f} |" in text
        if case["anchors"] == 40:
            share = case["ms"] / (step["step_ms"] * 40 / views)
            assert f"loss share ({case['impl']}, N=40, M=64, C=10): " in text
            assert f"= {100 * share:.2f}% of the step" in text


@pytest.mark.slow
def test_gpu_suite_commands_parse():
    for sizes in ([], ["--tiny"]):
        out = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--dry-run", *sizes], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        commands = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("== ") and ": " in line
                    and "done" not in line]
        assert len(commands) == 10
        audit = shlex.split(commands.pop())  # the collective audit, on 8 forced CPU devices
        assert audit[:2] == ["JAX_PLATFORMS=cpu", "python"] and audit[2] == "benchmarks/collective_audit.py"
        sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
        import collective_audit
        collective_audit.parse_args(audit[3:])
        for command in commands:
            words = shlex.split(command)
            argv = words[words.index("genscl_jax.bench") + 1:]
            args = bench.parse_args(argv)
            assert args.json.endswith(".json")


def test_torch_reference_matches_our_loss_and_model_size():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import torch_reference_step as ref
    from helpers import random_loss_inputs

    x = random_loss_inputs(2, 24, 24)
    labels = jax.nn.one_hot(jnp.arange(24) % 5, 5) * 0.7 + 0.3 * x["labels"][:, :5]
    expected = losses.generalized_supcon_loss(x["features"], labels)
    got = ref.generalized_supcon_loss(torch.tensor(np.asarray(x["features"])), torch.tensor(np.asarray(labels)))
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-5)

    flax_model = models.ContrastiveModel(models.create_resnet("resnet18", stem="cifar", width_multiplier=0.25),
                                         models.ProjectionHead(hidden_dim=128, output_dim=128))
    shapes = jax.eval_shape(lambda: flax_model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
    flax_params = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes["params"]))
    torch_params = sum(p.numel() for p in ref.ContrastiveResNet("resnet18", 0.25, "cifar").parameters())
    assert torch_params == flax_params


@pytest.mark.slow
def test_the_pipeline_fed_step_is_skipped_with_a_message_without_tensorflow(tmp_path):
    """The GPU suite's input-pipeline case on a machine without TensorFlow: one line saying what is missing, a JSON
    that says "skipped", exit 0 (so the suite goes on), and no step built for nothing."""
    out = str(tmp_path / "pipeline.json")
    script = ("import runpy, sys\nsys.modules['tensorflow'] = None  # as if it were not installed\n"
              f"sys.argv = ['genscl_jax.bench', '--quick', '--input', 'jpeg', '--json', {out!r}]\n"
              "runpy.run_module('genscl_jax.bench', run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped: --input jpeg feeds the step from the product's tf.data pipeline" in proc.stdout
    assert "lacks tensorflow" in proc.stdout
    with open(out) as f:
        assert "lacks tensorflow" in json.load(f)["pipeline_step"]["skipped"]
