"""Two processes with two CPU devices each (gloo collectives) train like one process on the same global batch,
save and resume a checkpoint together, and only process 0 writes summaries."""

import json
import os
import subprocess
import sys

import multihost_worker
from helpers import ROOT, free_port
import numpy as np
import pytest

from genscl_jax import runner

pytestmark = pytest.mark.slow  # trains a run or starts a process

def start(workdir, steps, env_extra):
    env = dict(os.environ, **env_extra)
    return subprocess.Popen([sys.executable, "tests/multihost_worker.py", str(workdir), str(steps)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("a process did not finish in 10 minutes: " + proc.communicate()[1][-4000:]) from None
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def run_two_processes(workdir, steps):
    port = free_port()
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    procs = [start(workdir, steps, {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu",
                                    "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
                                    "JAX_PROCESS_ID": str(i)}) for i in range(2)]
    try:
        return [finish(p) for p in procs]
    finally:
        for proc in procs:  # its partner failed or hung: a process left waiting would hold the cores for good
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.mark.long(minutes=3)
def test_two_processes_match_one_and_resume_together(tmp_path):
    # Both settings run the same phases: 2 steps, then a resume to 4 (num_train_steps shapes the cosine schedule,
    # so the phases must match for the parameters to).
    single_dir = str(tmp_path / "single")  # the reference runs in this (single-process) pytest process
    runner.run(multihost_worker.config_for(2), single_dir)
    single = multihost_worker.describe(single_dir, runner.run(multihost_worker.config_for(4), single_dir))
    assert single["process_count"] == 1 and single["steps"] == 4

    first = run_two_processes(tmp_path / "multi", 2)
    assert [r["process_count"] for r in first] == [2, 2] and first[0]["device_count"] == 4
    assert first[0]["local_devices"] == 2 and first[0]["steps"] == 2
    resumed = run_two_processes(tmp_path / "multi", 4)  # resumes from the step-2 checkpoint
    assert [r["steps"] for r in resumed] == [4, 4]

    a, b = resumed
    assert a["params_checksum"] == b["params_checksum"] and a["final_loss"] == b["final_loss"]
    np.testing.assert_allclose(a["params_first"], single["params_first"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a["params_checksum"], single["params_checksum"], rtol=1e-5)
    np.testing.assert_allclose(a["queue_checksum"], single["queue_checksum"], rtol=1e-5)
    np.testing.assert_allclose(a["final_loss"], single["final_loss"], rtol=1e-4)

    # Only process 0 writes: one summary.json and one set of TensorBoard events in the shared workdir.
    workdir = tmp_path / "multi"
    assert (workdir / "summary.json").exists()
    events = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]
    assert len(events) == 2  # one per launch of process 0, none from process 1
