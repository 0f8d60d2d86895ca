"""Run by test_multidevice.py in a process with 8 virtual CPU devices: the same global batch on a 1-device mesh
and on an 8-device mesh must give the same step, dense, micro-batched and with the loss in blocks. Prints one
JSON line of max differences per step kind."""

import json
import sys

import jax
import numpy as np

sys.path.insert(0, "tests")
from helpers import make_tiny_config  # noqa: E402  (helpers imports no torch; conftest does)

from genscl_jax import data  # noqa: E402
from genscl_jax.runtime import parallel  # noqa: E402
from genscl_jax.trainers import pretrain  # noqa: E402


def run(devices, steps=2, **overrides):
    config = make_tiny_config(batch_size=16, **{"moco.enabled": True, "moco.queue_size": 64,
                                                "mix.kind": "mixup_cutmix", **overrides})
    trainer = pretrain.build_trainer(config, parallel.create_mesh(devices), data.resolve(config))
    state, batches, history = trainer.state, trainer.batches(0), []
    for _ in range(steps):
        state, metrics = trainer.train_step(state, next(batches))
        history.append(jax.device_get(metrics))
    return jax.device_get(state), history


def max_diff(a, b):
    diffs = jax.tree_util.tree_map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - y))), a, b)
    return max(jax.tree_util.tree_leaves(diffs))


def differences(overrides):
    one_state, one_hist = run(jax.devices()[:1], **overrides)
    eight_state, eight_hist = run(jax.devices(), **overrides)
    return {
        "loss": max(float(abs(a["loss"] - b["loss"])) for a, b in zip(one_hist, eight_hist)),
        "grad_norm": max(float(abs(a["grad_norm"] - b["grad_norm"])) for a, b in zip(one_hist, eight_hist)),
        "params": max_diff(one_state.params, eight_state.params),
        "batch_stats": max_diff(one_state.batch_stats, eight_state.batch_stats),
        "ema": max_diff(one_state.ema, eight_state.ema),
        "queue_keys": max_diff(one_state.queue["keys"], eight_state.queue["keys"]),
        "queue_labels": max_diff(one_state.queue["labels"], eight_state.queue["labels"]),
        "queue_pointer": int(one_state.queue["pointer"]) - int(eight_state.queue["pointer"]),
    }


if __name__ == "__main__":
    assert jax.device_count() == 8, jax.devices()
    # The dense step, and 2 micro-batches of 8 images (one per device each) with ghost BatchNorm.
    # And the loss in strided blocks of 8 anchor rows (loss_chunked): one row of every device's shard per block.
    print(json.dumps({"dense": differences({}), "micro_batches": differences({"micro_batch_size": 8}),
                      "loss_blocks": differences({"loss_block_size": 8})}))
