"""One device and eight devices compute the same step on the same global batch (BatchNorm statistics, the
contrast set and the queue all span the global batch), dense and in micro-batches (each micro-batch takes the same
rows of every device's shard, so its ghost BatchNorm statistics do not depend on the device count)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # trains a run or starts a process

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_one_and_eight_devices_agree():
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    proc = subprocess.run([sys.executable, "tests/multidevice_equivalence.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results.keys() == {"dense", "micro_batches", "loss_blocks"}
    for kind, diffs in results.items():
        assert diffs["queue_pointer"] == 0
        for key in ("loss", "grad_norm", "params", "batch_stats", "ema", "queue_keys", "queue_labels"):
            assert diffs[key] < 1e-4, (kind, key, diffs)
