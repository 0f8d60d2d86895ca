"""One device and eight devices compute the same step on the same global batch (BatchNorm statistics, the
contrast set and the queue all span the global batch), dense and in micro-batches (each micro-batch takes the same
rows of every device's shard, so its ghost BatchNorm statistics do not depend on the device count)."""

import pytest
from helpers import run_on_eight_devices

pytestmark = pytest.mark.slow  # trains a run or starts a process


def test_one_and_eight_devices_agree():
    results = run_on_eight_devices("tests/multidevice_equivalence.py")
    assert results.keys() == {"dense", "micro_batches", "loss_blocks"}
    for kind, diffs in results.items():
        assert diffs["queue_pointer"] == 0
        for key in ("loss", "grad_norm", "params", "batch_stats", "ema", "queue_keys", "queue_labels"):
            assert diffs[key] < 1e-4, (kind, key, diffs)
