"""A checkpoint damaged after it was written (what a preempted copy, a full disk or a flaky network file system
leaves): a resumed run sets it aside and resumes from the newest one that restores, with one warning line; readers
of another run's workdir (load_encoder, linear evaluation, a teacher) stop in one line, without falling back.

Through the command line, as a user meets it: a finished 6-step run (checkpoints 2, 4, 6) whose newest checkpoint
is then damaged, rerun with the same command, must end with the same final loss as the first run.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import last_line, make_tiny_config, write_config

from genscl_jax import runner
from genscl_jax.trainers import linear_eval, teachers
from genscl_jax.training import checkpointing
from genscl_jax.workdirs import trained_network

pytestmark = pytest.mark.slow  # trains a run or starts a process

ROOT = os.path.join(os.path.dirname(__file__), "..")


def run_main(*args):
    return subprocess.run([sys.executable, "-m", "genscl_jax.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=os.path.abspath(ROOT)))


def final_loss(workdir):
    with open(os.path.join(workdir, "summary.json")) as f:
        return json.load(f)["final_loss"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(config file, workdir) of a finished 6-step run with checkpoints 2, 4 and 6."""
    folder = tmp_path_factory.mktemp("finished")
    config = write_config(folder / "tiny.py", num_train_steps=6, checkpoint_every_steps=2)
    done = run_main("--config", config, "--workdir", str(folder / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(folder / "run" / "checkpoints")) == ["2", "4", "6"]
    return config, str(folder / "run")


def copy_of(workdir, tmp_path):
    shutil.copytree(workdir, tmp_path / "run")
    return str(tmp_path / "run")


def files_of(step_dir):
    return [p for p in glob.glob(os.path.join(step_dir, "**"), recursive=True) if os.path.isfile(p)]


def truncate_largest_array_file(step_dir):
    largest = max(files_of(step_dir), key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 2)


def delete_an_array_file(step_dir):
    arrays = [p for p in files_of(step_dir) if f"{os.sep}d{os.sep}" in p]  # orbax's array data files
    os.remove(max(arrays, key=os.path.getsize))


def corrupt_the_tree_metadata(step_dir):
    with open(os.path.join(step_dir, "default", "_METADATA"), "w") as f:
        f.write('{"tree_metadata": ')  # cut short, as a full disk leaves a file


DAMAGES = {"truncated": truncate_largest_array_file, "file missing": delete_an_array_file,
           "metadata corrupt": corrupt_the_tree_metadata}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_rerun_sets_a_damaged_newest_checkpoint_aside_and_resumes_from_the_one_before(finished, tmp_path, damage):
    config, original = finished
    workdir = copy_of(original, tmp_path)
    os.remove(os.path.join(workdir, "summary.json"))
    DAMAGES[damage](os.path.join(workdir, "checkpoints", "6"))

    rerun = run_main("--config", config, "--workdir", workdir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr, rerun.stderr[-3000:]
    warnings = [line for line in rerun.stderr.splitlines() if "does not restore" in line]
    assert len(warnings) == 1, rerun.stderr[-3000:]
    assert re.search(rf"checkpoint {re.escape(workdir)}/checkpoints/6 does not restore \(.+\): moved to "
                     rf"{re.escape(workdir)}/checkpoints/damaged/6; resuming from step 4", warnings[0]), warnings[0]
    assert f"resumed from step 4 in {workdir}/checkpoints" in rerun.stderr
    # Set aside, never deleted; the run trained steps 5 and 6 again, to the same final loss.
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "damaged", "6", "default"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6", "damaged"]
    assert final_loss(workdir) == final_loss(original)


def test_when_no_checkpoint_restores_one_line_names_them_and_nothing_moves(finished, tmp_path):
    config, original = finished
    workdir = copy_of(original, tmp_path)
    for step in ("2", "4", "6"):
        truncate_largest_array_file(os.path.join(workdir, "checkpoints", step))
    rerun = run_main("--config", config, "--workdir", workdir)
    assert rerun.returncode == 1 and "Traceback" not in rerun.stderr, rerun.stderr[-3000:]
    line = last_line(rerun.stderr)
    assert line.startswith(f"error: no checkpoint in {workdir}/checkpoints restores: step 6 is damaged ("), line
    assert "step 4 is damaged (" in line and "step 2 is damaged (" in line
    assert f"move them into {workdir}/checkpoints/damaged to train again from step 0" in line
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6"]


def test_readers_of_another_workdir_name_the_damaged_checkpoint_and_do_not_fall_back(finished, tmp_path):
    """load_encoder, export, linear evaluation and a teacher read the newest checkpoint or stop in one line; an
    older checkpoint is read only when asked for (step=)."""
    _, original = finished
    workdir = copy_of(original, tmp_path)
    truncate_largest_array_file(os.path.join(workdir, "checkpoints", "6"))
    expected = (rf"^{re.escape(workdir)}: checkpoint {re.escape(workdir)}/checkpoints/6 is damaged \(.+\): rerun "
                r"the command that trained it \(it sets a damaged checkpoint aside and resumes from the newest that "
                r"restores\); step=4 reads the older checkpoint 4$")
    with pytest.raises(trained_network.EncoderError, match=expected):
        trained_network.load_encoder(workdir)
    module, variables = trained_network.load_encoder(workdir, step=4)
    images = np.zeros((2, 8, 8, 3), np.float32)
    assert np.all(np.isfinite(module.apply(variables, images, train=False)))
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "6"))  # a reader never moves anything

    probe = make_tiny_config(mode="linear_eval", **{"linear_eval.pretrained_workdir": workdir})
    with pytest.raises(runner.RunError, match=r"^config.linear_eval.pretrained_workdir: .*checkpoints/6 is damaged"):
        runner.run(probe, str(tmp_path / "probe"))
    with pytest.raises(trained_network.EncoderError, match="checkpoints/6 is damaged"):
        linear_eval.load_frozen_encoder(workdir)


def test_a_teacher_with_a_damaged_checkpoint_is_one_line(tmp_path):
    teacher_dir = str(tmp_path / "teacher")
    runner.run(make_tiny_config(mode="supervised", num_train_steps=2), teacher_dir)
    truncate_largest_array_file(os.path.join(teacher_dir, "checkpoints", "2"))
    config = make_tiny_config(**{"kd.teacher": teacher_dir, "kd.alpha": 1.0})
    with pytest.raises(teachers.TeacherError, match=rf"^teacher {re.escape(teacher_dir)}: checkpoint .*/2 is "
                                                     r"damaged \(.+\): rerun the command that trained it") as error:
        teachers.load_teacher(config, num_classes=10, channels=3)
    assert "\n" not in str(error.value)


def test_a_checkpoint_of_another_state_is_not_damage_and_stays(tmp_path):
    """A config change is not damage: nothing is set aside, and the message names the array that differs."""
    runner.run(make_tiny_config(num_train_steps=2), str(tmp_path))
    for record in ("config.json", "summary.json"):  # a workdir without its record: only the checkpoint can tell
        os.remove(tmp_path / record)
    with pytest.raises(runner.RunError, match=r"checkpoint .*/checkpoints/2 does not match this run's state "
                                              r"\(opt_state/.*/head/dense2/bias has shape \(8,\) there, \(16,\) in "
                                              r"this run\).*use a new --workdir"):
        runner.run(make_tiny_config(num_train_steps=3, **{"head.output_dim": 16}), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
    assert checkpointing.Checkpointer(str(tmp_path / "checkpoints"), read_only=True).steps() == [2]
