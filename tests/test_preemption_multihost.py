"""Preemption of a multi-process run: SIGTERM to one process only stops every process at the same step, with one
complete checkpoint, exit 0; the rerun resumes all of them. Two processes with two CPU devices each (gloo)."""

import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest
from helpers import ROOT, free_port

from genscl_jax.training import checkpointing

pytestmark = pytest.mark.slow  # trains a run or starts a process

STEP_LOGGED = re.compile(r"^\w+  step ([\d,]+)/")  # process 0's progress line: "pretrain  step 7/100,000 (0%)  ..."
NO_PERIODIC_CHECKPOINT = 1_000_000


class Worker:
    """One process of tests/multihost_worker.py whose output is drained as it comes (a full pipe would stall it
    and, through the collectives, the other process too)."""

    def __init__(self, workdir, steps, process_id, port):
        flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
        env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                   JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id))
        self.proc = subprocess.Popen(
            [sys.executable, "tests/multihost_worker.py", str(workdir), str(steps), str(NO_PERIODIC_CHECKPOINT)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out, self.err = [], []
        self.step_seen = threading.Event()
        self.wanted_step = None
        self._readers = [threading.Thread(target=self._drain, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    def _drain(self, stream, lines):
        for line in stream:
            lines.append(line)
            match = STEP_LOGGED.search(line)
            if self.wanted_step is not None and match and int(match.group(1).replace(",", "")) >= self.wanted_step:
                self.step_seen.set()

    def finish(self, timeout=240):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        for reader in self._readers:
            reader.join(30)
        stderr = "".join(self.err)
        assert self.proc.returncode == 0, stderr[-4000:]
        return json.loads(self.out[-1]), stderr


def run_pair(workdir, steps, sigterm_process_1_after=None):
    port = free_port()
    workers = [Worker(workdir, steps, i, port) for i in range(2)]
    try:
        if sigterm_process_1_after is not None:
            # Only process 0 prints progress; the processes step together.
            workers[0].wanted_step = sigterm_process_1_after
            assert workers[0].step_seen.wait(240), "".join(workers[0].err)[-4000:]
            assert workers[1].proc.poll() is None
            workers[1].proc.send_signal(signal.SIGTERM)  # process 0 gets no signal at all
        return [w.finish() for w in workers]
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()


@pytest.mark.long(minutes=3)
def test_sigterm_to_one_process_stops_all_at_one_step_and_the_rerun_resumes_all(tmp_path):
    workdir = tmp_path / "run"
    (first, err0), (second, err1) = run_pair(workdir, 100_000, sigterm_process_1_after=3)
    assert "SIGTERM received" in err1 and "SIGTERM received" not in err0
    assert first["preempted"] and second["preempted"]
    stopped = first["steps"]
    assert second["steps"] == stopped and 3 <= stopped < 100_000
    # One checkpoint, the preemption's, complete (it restores) and the same for both processes.
    assert sorted(os.listdir(workdir / "checkpoints")) == [str(stopped)]
    assert checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(workdir)), read_only=True).latest_step() \
        == stopped
    assert first["params_checksum"] == second["params_checksum"]

    (first, err0), (second, err1) = run_pair(workdir, stopped + 2)
    for result, err in ((first, err0), (second, err1)):
        assert f"resumed from step {stopped}" in err
        assert result["steps"] == stopped + 2 and not result["preempted"]
    assert first["params_checksum"] == second["params_checksum"]


SIGTERM_DURING_SETUP = """
import json, os, signal, sys
from helpers import make_tiny_config
from genscl_jax import runner
from genscl_jax.config import validation

validate = validation.validate


def sigterm_then_validate(*args):  # runner.run calls it right after jax.distributed has started
    os.kill(os.getpid(), signal.SIGTERM)
    return validate(*args)


validation.validate = sigterm_then_validate
summary = runner.run(make_tiny_config(num_train_steps=4), sys.argv[1])
print(json.dumps({"preempted": summary["preempted"], "steps": summary["steps"]}))
"""


def test_sigterm_before_the_loop_is_not_lost_to_jax_distributed(tmp_path):
    """jax.distributed's own SIGTERM listener takes a signal that comes while the run is being set up and tells no
    one; the run must still stop (at its first check, before any step) rather than train on."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"localhost:{free_port()}",
               JAX_NUM_PROCESSES="1", JAX_PROCESS_ID="0", PYTHONPATH=os.path.join(ROOT, "tests"))
    done = subprocess.run([sys.executable, "-c", SIGTERM_DURING_SETUP, str(tmp_path / "run")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"preempted": True, "steps": 0}
    assert not (tmp_path / "run" / "summary.json").exists()
