"""The command line, as a user runs it: bad configs, preemption by SIGTERM, resume and summary.json."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import last_line, without_log_lines, write_config

from genscl_jax import runner
from genscl_jax.config import defaults
from genscl_jax.runtime import preemption
from genscl_jax.training import checkpointing

pytestmark = pytest.mark.slow  # trains a run or starts a process

ROOT = os.path.join(os.path.dirname(__file__), "..")
# The ImageNet recipe's runlocal variant runs on synthetic data; these overrides make it tiny, and leave watching
# the run (kNN, online probe) off, as the tiny configs of conftest do.
TINY = ["--config", "configs/imagenet_resnet50.py:runlocal", "--config.kd.alpha=0", "--config.model=resnet10",
        "--config.width_multiplier=0.0625", "--config.image_size=8", "--config.batch_size=8",
        "--config.moco.queue_size=32", "--config.mode=pretrain", "--config.knn.enabled=false",
        "--config.online_probe.enabled=false"]


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
                                            "runlocal, gpu8")


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


@pytest.mark.long(minutes=1)
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


@pytest.mark.long(minutes=1)
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


def interruptible_main(*args, **kwargs):
    """main(...) with Ctrl-C in its default state even when these tests run in a background job, which starts
    its children with SIGINT ignored (and an ignored SIGINT stays ignored)."""
    return main(*args, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def wait_for_line(proc, text, timeout=240):
    """Reads proc's stderr until a line holds `text`; returns what was read."""
    seen = []

    def read():
        for line in proc.stderr:
            seen.append(line)
            if text in line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive() or not seen or text not in seen[-1]:
        proc.kill()
        raise AssertionError(f"no line with {text!r}: " + "".join(seen)[-3000:])
    return "".join(seen)


def communicate_or_kill(proc, timeout=120):
    """proc's stderr once it has exited; a process that does not exit in time is killed and the test fails."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the run did not exit: " + proc.communicate()[1][-3000:]) from None


def wait_for_checkpoint(proc, ckdir, step, timeout=240):
    """Until <ckdir>/<step> exists (the run is compiled and training), with the process still running."""
    deadline = time.time() + timeout
    while not os.path.isdir(os.path.join(ckdir, str(step))):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)


@pytest.mark.long(minutes=1)
def test_ctrl_c_saves_at_the_current_step_exits_130_and_the_same_command_resumes(tmp_path):
    config = write_config(tmp_path / "tiny.py", checkpoint_every_steps=3)
    workdir = str(tmp_path / "run")
    args = ["--config", config, "--config.num_train_steps=100000", "--workdir", workdir]
    proc = interruptible_main(*args)
    wait_for_checkpoint(proc, os.path.join(workdir, "checkpoints"), 3)
    time.sleep(3)  # some steps past the periodic checkpoint: the ones Ctrl-C must not lose
    proc.send_signal(signal.SIGINT)
    err = communicate_or_kill(proc)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert "Ctrl-C: saving a checkpoint at the current step" in err
    line = last_line(err)
    saved = re.fullmatch(r"interrupted by Ctrl-C at step (\d+), checkpoint saved; the same command resumes", line)
    assert saved, line
    saved = int(saved.group(1))
    assert saved > 3, saved  # the step it had reached, past the periodic checkpoint
    assert max(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()) == saved

    done = main("--config", config, f"--config.num_train_steps={saved + 2}", "--workdir", workdir)
    _, err = done.communicate(timeout=240)
    assert done.returncode == 0, err[-3000:]
    assert f"resumed from step {saved}" in err
    # The changed run length is allowed, and said once.
    assert len([line for line in err.splitlines() if "resuming with num_train_steps 100000 -> " in line]) == 1


def test_a_second_ctrl_c_stops_at_once_in_one_line(tmp_path):
    config = write_config(tmp_path / "tiny.py", checkpoint_every_steps=3)
    workdir = tmp_path / "run"
    proc = interruptible_main("--config", config, "--config.num_train_steps=100000", "--workdir", str(workdir))
    deadline = time.time() + 240
    while not (workdir / "config.json").exists():  # written once Ctrl-C is a stop request, before the model builds
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    wait_for_line(proc, "Ctrl-C: saving a checkpoint")  # acknowledged while the model is still being built
    proc.send_signal(signal.SIGINT)
    err = communicate_or_kill(proc)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert last_line(err) == ("stopped at once by Ctrl-C, saving nothing more; the same command resumes from the "
                              "newest checkpoint")


def main_with_a_stub_runner(tmp_path, run_body):
    """main.main under `python -m`, as the command line runs it, with runner.run replaced by `run_body` (an
    expression): the finished process."""
    (tmp_path / "stub_runner.py").write_text(f"""
from absl import flags
from genscl_jax import main, runner
runner.run = lambda *args, **kwargs: {run_body}
flags.FLAGS(["main", "--workdir", "unused"])
main.main(["main"])
""")
    return subprocess.run([sys.executable, "-m", "stub_runner"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=os.path.abspath(ROOT)))


def test_stopping_at_once_exits_130_also_when_the_interrupt_came_through_exec(tmp_path):
    """The second-Ctrl-C test's flake, made certain: sys.exit(130) there ends the process by SIGINT (-2) instead.
    What main sees when the second Ctrl-C lands while flax builds a module: the KeyboardInterrupt comes out of code
    that dataclasses made with exec(), which under `python -m` leaves CPython's "unhandled KeyboardInterrupt" flag
    set."""
    proc = main_with_a_stub_runner(tmp_path, 'exec("raise KeyboardInterrupt")')
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert last_line(proc.stderr) == ("stopped at once by Ctrl-C, saving nothing more; the same command resumes "
                                      "from the newest checkpoint")


def test_a_ctrl_c_taken_before_the_first_step_does_not_claim_a_checkpoint(tmp_path):
    """A Ctrl-C that the training loop takes before its first step (a stop request that comes while the data or the
    model is prepared): the loop saved nothing, and the line must not say it did."""
    proc = main_with_a_stub_runner(
        tmp_path, '{"mode": "pretrain", "steps": 0, "preempted": True, "interrupted": True}')
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert last_line(proc.stderr) == "interrupted by Ctrl-C, with no trained step unsaved; the same command resumes"


@pytest.mark.parametrize("setup, message", [
    ("workdir_is_a_file", "config error: --workdir {tmp}/file is a file, not a directory: give a new directory"),
    ("no_such_config", "config error: --config {tmp}/nope.py: no such file (the recipes are in configs/"),
    ("syntax_error", "config error: {tmp}/broken.py:3: '(' was never closed (c = defaults.base_config(()"),
    ("no_get_config", "config error: {tmp}/other.py has no get_config(): a config file defines get_config()"),
    ("get_config_raises", "config error: {tmp}/raises.py: get_config() raised NameError: name 'undefined' is not "
                          "defined"),
])
def test_bad_command_lines_are_one_line(tmp_path, setup, message):
    config, workdir = write_config(tmp_path / "tiny.py"), tmp_path / "run"
    if setup == "workdir_is_a_file":
        workdir = tmp_path / "file"
        workdir.write_text("not a directory")
    elif setup == "no_such_config":
        config = str(tmp_path / "nope.py")
    elif setup == "syntax_error":
        config = str(tmp_path / "broken.py")
        (tmp_path / "broken.py").write_text("from genscl_jax.config import defaults\ndef get_config():\n"
                                            "    c = defaults.base_config(()\n    return c\n")
    elif setup == "no_get_config":
        config = str(tmp_path / "other.py")
        (tmp_path / "other.py").write_text("def config():\n    return None\n")
    elif setup == "get_config_raises":
        config = str(tmp_path / "raises.py")
        (tmp_path / "raises.py").write_text("def get_config():\n    return undefined\n")
    proc = main("--config", config, "--workdir", str(workdir))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert last_line(err).startswith(message.format(tmp=tmp_path)), err[-3000:]


def read_summary(workdir):
    with open(os.path.join(workdir, "summary.json")) as f:
        return json.load(f)


@pytest.mark.slow
@pytest.mark.long(minutes=3)
def test_sigterm_during_an_evaluation_abandons_it_saves_and_the_resume_redoes_it(tmp_path):
    """SIGTERM while pretraining's periodic evaluation (kNN bank and test pass) runs: it is abandoned within a few
    seconds, the step is saved with its evaluation marked as due, and the same command redoes that evaluation first
    and finishes with the result of a run that was never stopped."""
    config = write_config(tmp_path / "tiny.py", checkpoint_every_steps=4, eval_every_steps=2,
                          # 1,024 batches of 2 per split: an evaluation of seconds, not one that ends before the signal
                          eval_batch_size=2, **{"knn.enabled": True, "online_probe.enabled": True})
    reference = main("--config", config, "--workdir", str(tmp_path / "reference"))
    err = communicate_or_kill(reference, timeout=600)
    assert reference.returncode == 0, err[-3000:]

    workdir = str(tmp_path / "run")
    args = ["--config", config, "--verbosity=1", "--workdir", workdir]  # its debug lines: the phases
    proc = main(*args)
    wait_for_line(proc, "pretrain: evaluating at step 2")
    proc.send_signal(signal.SIGTERM)
    signalled = time.time()
    err = communicate_or_kill(proc)
    assert time.time() - signalled < 10, err[-3000:]
    assert proc.returncode == 0 and "Preempted at step 2" in err, err[-3000:]
    ckdir = os.path.join(workdir, "checkpoints")
    assert sorted(int(d) for d in os.listdir(ckdir) if d.isdigit()) == [2]  # saved although not a checkpoint step
    saved = checkpointing.Checkpointer(ckdir, read_only=True)
    assert saved.metadata(2)["evaluation_due"] is True
    saved.close()

    resumed = main(*args)
    err = communicate_or_kill(resumed, timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    after_resume = err[err.index("resumed from step 2"):]
    assert "pretrain: evaluating at step 2" in after_resume.split("compiling the step")[0]  # before any new step
    expected, summary = read_summary(tmp_path / "reference"), read_summary(workdir)
    for key in ("final_loss", "knn_top1", "knn_best_top1", "probe_top1", "probe_best_top1"):
        assert summary[key] == pytest.approx(expected[key], rel=1e-6), key


def start_compiling_a_step_of_seconds(tmp_path):
    """A run of the ResNet-18 runlocal size whose first step compiles for many seconds on a CPU (no compilation
    cache), stopped at the console line that says the compilation starts."""
    tmp_path.mkdir()
    config = write_config(tmp_path / "compile.py", model="resnet18", width_multiplier=0.125, image_size=32)
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
    proc = interruptible_main("--config", config, "--verbosity=1", "--workdir", str(tmp_path / "run"), env=env)
    wait_for_line(proc, "pretrain: compiling the step")
    return proc


@pytest.mark.slow
@pytest.mark.long(minutes=2)
def test_ctrl_c_during_compilation_stops_promptly_and_a_second_one_at_once(tmp_path):
    # The first Ctrl-C: nothing is unsaved while the first step compiles, so the run ends without waiting for it.
    proc = start_compiling_a_step_of_seconds(tmp_path / "first")
    proc.send_signal(signal.SIGINT)
    signalled = time.time()
    err = communicate_or_kill(proc)
    assert time.time() - signalled < preemption.GRACE_SECONDS + 3, err[-3000:]
    assert proc.returncode == 130, err[-3000:]
    # The line that opens the compile comes after the loop's first check (CI once sent the Ctrl-C between the two,
    # when the line came before it). Its debug lines (--verbosity=1) aside: jax logs one more at the interpreter's
    # exit.
    assert last_line(without_log_lines(err)) == ("interrupted by Ctrl-C, with no trained step unsaved; the same "
                                                 "command resumes")
    assert not os.path.exists(tmp_path / "first" / "run" / "checkpoints" / "1")  # the step never ran

    # The second Ctrl-C ends the process within two seconds, compilation or not.
    proc = start_compiling_a_step_of_seconds(tmp_path / "second")
    proc.send_signal(signal.SIGINT)
    wait_for_line(proc, "Ctrl-C: saving a checkpoint")
    proc.send_signal(signal.SIGINT)
    signalled = time.time()
    err = communicate_or_kill(proc)
    assert time.time() - signalled < 2, err[-3000:]
    assert proc.returncode == 130, err[-3000:]
    assert last_line(without_log_lines(err)) == ("stopped at once by Ctrl-C, saving nothing more; the same command "
                                                 "resumes from the newest checkpoint")
