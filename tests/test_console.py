"""What a run prints: a short console (the libraries quiet), one progress line per log step with an ETA, a live bar
on a terminal, the libraries' logging back with --verbose."""

import logging
import os
import pty
import re
import select
import subprocess
import sys

import pytest

from conftest import write_config

from genscl_jax.runtime import console
from genscl_jax.training import progress

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PROGRESS = re.compile(r"^pretrain  step ([\d,]+)/200 \(\d+%\)  \d+:\d\d:\d\d elapsed, ETA \d+:\d\d:\d\d  [\d,]+ img/s  "
                      r"loss [\d.]+  input wait \d+%$")  # input wait: the host pipeline's share
ABSL_INFO = re.compile(r"^I\d{4} ")  # absl's (and C++'s) INFO prefix: I1201 22:20:19.186790 ... file.py:NN]


def test_the_progress_line_reads_as_documented():
    line = progress.progress_line("pretrain", 300, 600, elapsed=47, per_second=300 / 47, examples_per_second=1180,
                                  metrics={"loss": 5.9412, "grad_norm": 1.3})
    assert line == "pretrain  step 300/600 (50%)  0:00:47 elapsed, ETA 0:00:47  1,180 img/s  loss 5.94"
    first = progress.progress_line("supervised", 1, 10, elapsed=3, per_second=0, examples_per_second=0, metrics={})
    assert first == "supervised  step 1/10 (10%)  0:00:03 elapsed, ETA unknown"
    last = progress.progress_line("linear_eval", 10, 10, elapsed=3725, per_second=2, examples_per_second=64,
                                  metrics={"loss": 0.3104, "linear_eval_top1": 0.8913})
    assert last == "linear_eval  step 10/10 (100%)  1:02:05 elapsed  64 img/s  loss 0.310  test top-1 89.1%"


def test_a_new_field_is_one_entry(monkeypatch):
    """Another metric shows on every trainer's line by adding its key and format to FIELDS."""
    monkeypatch.setattr(progress, "FIELDS", progress.FIELDS + [("input_wait_fraction", "input wait {:.0%}")])
    line = progress.progress_line("pretrain", 1, 2, elapsed=1, per_second=1, examples_per_second=8,
                                  metrics={"loss": 2.0, "input_wait_fraction": 0.25})
    assert line.endswith("8 img/s  loss 2.00  input wait 25%")


def _record(path, level, message, exc_info=None):
    return logging.LogRecord("absl", level, path, 1, message, None, exc_info)


def test_libraries_are_quiet_below_warning_and_genscl_jax_is_not():
    quiet = console._LibraryFilter()
    orbax = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
    ours = os.path.join(os.path.dirname(console.__file__), "preemption.py")
    assert not quiet.filter(_record(orbax, logging.INFO, "Saving checkpoint"))
    assert quiet.filter(_record(orbax, logging.WARNING, "Checkpoint 3 is damaged"))
    assert not quiet.filter(_record(orbax, logging.WARNING, "CheckpointManagerOptions.read_only=True, setting x"))
    assert quiet.filter(_record(ours, logging.INFO, "ours"))
    assert quiet.filter(_record(ours, logging.WARNING, "SIGTERM received"))
    # A failed background save: orbax logs the traceback, raises it again, and the run reports it in one line.
    full = ValueError("RESOURCE_EXHAUSTED: Error writing local file: No space left on device [os_error_code='28']")
    thread = "/site-packages/orbax/checkpoint/_src/futures/future.py"
    assert not quiet.filter(_record(thread, logging.ERROR, "_SignalingThread.run() raised an exception",
                                    (ValueError, full, None)))
    assert quiet.filter(_record(thread, logging.ERROR, "a save failed"))  # an orbax error without a traceback
    assert quiet.filter(_record(ours, logging.ERROR, "ours", (ValueError, full, None)))


def test_tensorflow_start_up_notes_are_dropped_and_its_warnings_kept():
    caught = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
              "I0000 00:00:1796.1    27 port.cc:153] oneDNN custom operations are on.\n"
              "I0000 00:00:1796.2    27 cpu_feature_guard.cc:210] This TensorFlow binary is optimized\n"
              "To enable the following instructions: AVX512F, rebuild TensorFlow.\n"
              "W0000 00:00:1796.3    27 gpu_device.cc:2344] Cannot dlopen some GPU libraries.\n"
              "Traceback (most recent call last):\n")
    assert console._without_cpp_info(caught) == ("W0000 00:00:1796.3    27 gpu_device.cc:2344] Cannot dlopen some GPU "
                                                 "libraries.\nTraceback (most recent call last):\n")


def _main_args(tmp_path, *args):
    # A ~20k-parameter ResNet on 8 px synthetic images; linear evaluation on 2,048 precomputed features, 2 epochs.
    config = write_config(tmp_path / "tiny.py", num_train_steps=200, log_every_steps=10, checkpoint_every_steps=50,
                          mode="pretrain_and_eval", **{"linear_eval.num_epochs": 2, "linear_eval.augment": "none",
                                                       "linear_eval.precompute_features": True,
                                                       "knn.enabled": True, "online_probe.enabled": True})
    return [sys.executable, "-m", "genscl_jax.main", "--config", config, "--workdir", str(tmp_path / "run"), *args]


def _run(args):
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout, proc.stderr


@pytest.mark.slow
def test_a_run_prints_a_short_readable_console(tmp_path):
    out, err = _run(_main_args(tmp_path))
    lines = (out + err).splitlines()
    assert len(lines) <= 60, err
    assert not [line for line in lines if ABSL_INFO.match(line)], err  # no orbax, tfds, clu, jax or TF INFO line
    assert "orbax" not in err and "Parameters" not in err, err
    progress_lines = [line for line in err.splitlines() if PROGRESS.match(line)]
    assert len(progress_lines) == 19, err  # every 10 steps, the ETA on all but the last (step 200)
    assert err.splitlines()[0].startswith("pretrain_and_eval of ") and "  devices: 1 cpu, 1 process" in err, err
    assert "pretrain  step 200/200 (100%)" in err and "linear_eval features (train)  images 2,048/2,048" in err, err
    assert re.search(r"^linear_eval  step 64/64 \(100%\) .* test top-1 [\d.]+%  input wait \d+%$", err, re.M), err
    assert re.fullmatch(r"pretrain_and_eval done in \d+ s: final_loss=[\d.]+, knn_top1=[\d.]+, probe_top1=[\d.]+, "
                        r"linear_eval_top1=[\d.]+, "
                        r"linear_eval_top5=[\d.]+ \(summary: .*summary.json\)\n", out), out
    # The parameter table is in the workdir, the console has one line on it.
    assert "encoder/conv_init/kernel" in (tmp_path / "run" / "pretrain" / "parameters.txt").read_text()
    assert re.search(r"^pretrain  200 steps of 8 images; [\d,]+ parameters \([\d.]+ KiB\), table in ", err, re.M)


@pytest.mark.slow
def test_verbose_brings_the_libraries_back(tmp_path):
    args = _main_args(tmp_path, "--verbose", "--config.mode=pretrain", "--config.num_train_steps=10")
    _, err = _run(args)
    assert "checkpoint_manager.py" in err  # orbax's INFO lines
    assert re.search(r"logging_writer.py:\d+\] \[10\] .*grad_norm=", err), err  # every metric, clu's LoggingWriter
    assert "encoder/conv_init/kernel" in err  # the parameter table
    assert "pretrain  step 10/10 (100%)" in err


@pytest.mark.slow
def test_a_terminal_gets_a_live_bar(tmp_path):
    """stderr on a pseudo-terminal: tqdm's bar, redrawn in place, instead of progress lines."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(_main_args(tmp_path, "--config.mode=pretrain", "--config.num_train_steps=30"), cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT, COLUMNS="120"), stdout=subprocess.PIPE,
                            stderr=follower, text=True)
    os.close(follower)
    shown = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 600)
        try:
            chunk = os.read(leader, 65536) if ready else b""
        except OSError:  # the terminal closed: the run ended
            chunk = b""
        if not chunk:
            break
        shown += chunk
    out, _ = proc.communicate(timeout=60)
    screen = shown.decode(errors="replace")
    assert proc.returncode == 0, screen[-4000:]
    assert re.search(r"\rpretrain: +100%\|[^\r]*\| 30/30 \[", screen), screen[-4000:]
    assert "\r" in screen and "pretrain  step" not in screen, screen[-4000:]  # a bar, not lines
    assert out.startswith("pretrain done in "), out
