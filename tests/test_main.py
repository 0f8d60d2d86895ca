"""The command line, as a user runs it: bad configs, preemption by SIGTERM, resume and summary.json."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from genscl_jax import runner
from genscl_jax.config import defaults

ROOT = os.path.join(os.path.dirname(__file__), "..")
# The ImageNet recipe's runlocal variant runs on synthetic data; these overrides make it tiny.
TINY = ["--config", "configs/imagenet_resnet50.py:runlocal", "--config.kd.alpha=0", "--config.model=resnet10",
        "--config.width_multiplier=0.0625", "--config.image_size=8", "--config.batch_size=8",
        "--config.moco.queue_size=32", "--config.mode=pretrain"]


def main(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "genscl_jax.main", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("args, message", [
    (["--config.model=resnet51"], "config error: config.model='resnet51': unknown value; allowed: resnet10"),
    (["--config.pretrained_workdir=x"], "config error: config.pretrained_workdir: unknown key (did you mean "
                                        "linear_eval.pretrained_workdir?)"),
    (["--config.batch_size=abc"], "config error: "),
    (["--config.mix.knd=mixup"], "config error: config.mix.knd: unknown key (did you mean mix.kind?)"),
    (["--config.kd.alpha=1"], "config error: config.kd.alpha > 0 but config.kd.teacher is empty"),
    (["--config.moco.queue_size=33"], "config error: config.moco.queue_size=33 is not a positive multiple"),
])
def test_bad_config_is_one_line_before_any_work(tmp_path, args, message):
    started = time.time()
    proc = main(*TINY, *args, "--workdir", str(tmp_path))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = [line for line in err.splitlines() if line.strip() and "oneDNN" not in line and "cpu_feature" not in line
             and "rebuild TensorFlow" not in line and "absl::InitializeLog" not in line]
    assert lines[-1].startswith(message), err
    assert "Traceback" not in err, err
    assert not os.path.exists(tmp_path / "checkpoints")  # nothing was started
    assert time.time() - started < 60


def test_a_misspelt_recipe_argument_is_one_line(tmp_path):
    proc = main("--config", "configs/imagenet_resnet50.py:runlocl", "--workdir", str(tmp_path))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == ("config error: config argument 'runlocl' is unknown; this recipe takes: "
                                            "runlocal")


def test_recipes_import_each_other_from_any_working_directory(tmp_path):
    """configs/ is a package: cifar100's recipe imports cifar10's, also when run from another directory."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "genscl_jax.main", "--config",
                             os.path.join(os.path.abspath(ROOT), "configs", "cifar100_resnet50.py:runlocal"),
                             "--config.model=resnet51", "--workdir", str(tmp_path)], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=120)
    # The recipe loaded (so its import of cifar10_resnet50 worked); validation then rejects the override.
    assert proc.returncode == 2 and "config error: config.model='resnet51'" in err, err


def test_sigterm_saves_exits_zero_and_a_rerun_resumes(tmp_path):
    workdir = str(tmp_path)
    args = [*TINY, "--config.num_train_steps=100000", "--config.checkpoint_every_steps=3", "--workdir", workdir]
    proc = main(*args)
    ckdir = os.path.join(workdir, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and not (os.path.isdir(ckdir) and any(d.isdigit() for d in os.listdir(ckdir))):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    saved = max(int(d) for d in os.listdir(ckdir) if d.isdigit())
    assert saved >= 3
    assert not os.path.exists(os.path.join(workdir, "summary.json"))  # unfinished runs write no summary

    done = main(*TINY, f"--config.num_train_steps={saved + 2}", "--workdir", workdir)
    _, err = done.communicate(timeout=240)
    assert done.returncode == 0, err
    assert f"resumed from step {saved}" in err
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["steps"] == saved + 2 and summary["mode"] == "pretrain"


def test_first_moco_step_has_the_in_batch_loss_through_the_cli(tmp_path):
    """One step of the (shrunk) ImageNet recipe with the EMA key encoder on and off: the same final_loss, since at
    step 0 the keys equal the queries, the queue is empty and each anchor's own key is excluded."""
    losses_seen = {}
    for moco in (True, False):
        workdir = str(tmp_path / f"moco_{moco}")
        proc = main(*TINY, "--config.num_train_steps=1", "--config.mix.kind=none", "--config.dtype=float32",
                    f"--config.moco.enabled={moco}", "--workdir", workdir)
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        with open(os.path.join(workdir, "summary.json")) as f:
            losses_seen[moco] = json.load(f)["final_loss"]
    assert abs(losses_seen[True] - losses_seen[False]) <= 1e-5 * abs(losses_seen[False]), losses_seen


def test_every_mode_the_config_knows_is_one_the_runner_runs():
    """config.defaults.MODES (what validation accepts) and runner.MODES (what runs each) name the same modes."""
    assert tuple(runner.MODES) == defaults.MODES
