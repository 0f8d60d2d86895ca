"""A rerun of a workdir that has checkpoints: the config they were trained with (config.json) decides what may
change. Run length, logging and evaluation may (listed once); anything that changes what is trained stops the run
in one line listing the keys with both values, and config.json keeps recording what the checkpoints hold."""

import json
import os
import subprocess
import sys

import pytest
from conftest import last_line, make_tiny_config, write_config

import genscl_jax
from genscl_jax import runner
from genscl_jax.config import rerun, validation
from genscl_jax.workdirs import export

ROOT = os.path.join(os.path.dirname(__file__), "..")


def recorded(workdir):
    with open(os.path.join(workdir, "config.json")) as f:
        return json.load(f)


@pytest.mark.slow
def test_a_rerun_with_another_model_names_the_keys_and_keeps_the_workdir_usable(tmp_path):
    workdir = str(tmp_path / "run")
    runner.run(make_tiny_config(num_train_steps=2), workdir)
    before = recorded(workdir)

    mistaken = make_tiny_config(num_train_steps=2, model="resnet18", batch_size=16)
    with pytest.raises(validation.ConfigError) as error:
        runner.run(mistaken, workdir)
    message = str(error.value)
    assert "\n" not in message
    assert message == (f"--workdir {workdir}: this workdir's checkpoints were trained with another config: batch_size "
                       "8 -> 16, model 'resnet10' -> 'resnet18' (its config.json); these keys change what is trained, "
                       "so use a new --workdir (or rerun with the recorded values)")
    # The failed rerun left the record alone: the trained encoder is still reachable the documented way.
    assert recorded(workdir) == before
    module, _ = genscl_jax.load_encoder(workdir)
    assert module.width_multiplier == 0.0625
    assert export.main(["--workdir", workdir, "--output", str(tmp_path / "encoder.npz")]) == 0


@pytest.mark.slow
def test_a_rerun_may_change_run_length_logging_and_evaluation(tmp_path, caplog):
    workdir = str(tmp_path / "run")
    runner.run(make_tiny_config(num_train_steps=2), workdir)
    longer = make_tiny_config(num_train_steps=3, log_every_steps=2, eval_batch_size=32)
    with caplog.at_level("WARNING"):
        summary = runner.run(longer, workdir)
    assert summary["steps"] == 3
    listed = [r.getMessage() for r in caplog.records if "resuming with" in r.getMessage()]
    assert listed == [f"{workdir}: resuming with eval_batch_size 64 -> 32, log_every_steps 1 -> 2, num_train_steps "
                      "2 -> 3 (keys that do not change what is trained)"]
    assert recorded(workdir)["num_train_steps"] == 3  # it resumed from those checkpoints: the record follows


def test_settings_of_a_feature_off_in_both_runs_may_change():
    base = make_tiny_config()
    changed = make_tiny_config(**{"kd.teacher_model": "resnet18", "moco.queue_size": 64,
                                  "linear_eval.learning_rate": 1.0})
    assert set(rerun.rerun_changes(base, changed)) == {"kd.teacher_model", "moco.queue_size",
                                                           "linear_eval.learning_rate"}
    with pytest.raises(validation.ConfigError, match=r"moco.enabled False -> True"):
        rerun.rerun_changes(base, make_tiny_config(**{"moco.enabled": True}))
    with pytest.raises(validation.ConfigError, match=r"linear_eval.learning_rate 5.0 -> 1.0"):
        rerun.rerun_changes(make_tiny_config(mode="pretrain_and_eval"),
                                 make_tiny_config(mode="pretrain_and_eval", **{"linear_eval.learning_rate": 1.0}))


@pytest.mark.slow
def test_the_command_line_says_it_in_one_line(tmp_path):
    config, workdir = write_config(tmp_path / "tiny.py", num_train_steps=2), str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT))
    first = subprocess.run([sys.executable, "-m", "genscl_jax.main", "--config", config, "--workdir", workdir],
                           cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    again = subprocess.run([sys.executable, "-m", "genscl_jax.main", "--config", config, "--config.model=resnet18",
                            "--config.optimizer=adamw", "--workdir", workdir], cwd=ROOT, capture_output=True,
                           text=True, timeout=300, env=env)
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert last_line(again.stderr) == (
        f"config error: --workdir {workdir}: this workdir's checkpoints were trained with another config: model "
        "'resnet10' -> 'resnet18', optimizer 'sgd' -> 'adamw' (its config.json); these keys change what is trained, "
        "so use a new --workdir (or rerun with the recorded values)")
    assert recorded(workdir)["model"] == "resnet10"
    # The same command again: the recorded result line on stdout, nothing recomputed, how to extend or redo it.
    summary_written = os.stat(os.path.join(workdir, "summary.json")).st_mtime_ns
    same = subprocess.run([sys.executable, "-m", "genscl_jax.main", "--config", config, "--workdir", workdir],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert same.returncode == 0, same.stderr[-3000:]
    assert same.stdout == first.stdout and len(same.stdout.splitlines()) == 1
    assert "nothing recomputed. To train longer, rerun with a larger --config.num_train_steps" in same.stderr
    assert " step " not in same.stderr and "compil" not in same.stderr, same.stderr[-3000:]
    assert os.stat(os.path.join(workdir, "summary.json")).st_mtime_ns == summary_written


@pytest.mark.slow
def test_a_finished_workdir_answers_from_its_summary_without_running(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    config = make_tiny_config(num_train_steps=2)
    first = runner.run(config, workdir)
    os.remove(os.path.join(workdir, "input_contract.json"))  # as a workdir from before contracts were recorded
    monkeypatch.setitem(runner.MODES, "pretrain", lambda *args: pytest.fail("a finished run was run again"))
    again = runner.run(make_tiny_config(num_train_steps=2), workdir)
    assert again["already_finished"] and again["final_loss"] == first["final_loss"]
    assert os.path.exists(os.path.join(workdir, "input_contract.json"))  # recorded on the way
    # Any changed key (here a longer run) is work to do: the mode runs.
    with pytest.raises(pytest.fail.Exception, match="run again"):
        runner.run(make_tiny_config(num_train_steps=3), workdir)
