"""One process of the 2-process test in test_multihost.py (or the single-process reference run).

Usage: multihost_worker.py WORKDIR NUM_STEPS [CHECKPOINT_EVERY_STEPS]. Multi-process runs set JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID, exactly as a user on a CPU/GPU cluster would. Prints one JSON line describing
the final state.
"""

import json
import sys

import jax
import numpy as np

sys.path.insert(0, "tests")
from helpers import make_tiny_config  # noqa: E402  (helpers imports no torch; conftest does)

from genscl_jax import runner  # noqa: E402
from genscl_jax.training import checkpointing


def config_for(num_steps, checkpoint_every_steps=2):
    # With the kNN evaluation and the online probe, as users run: their features and state span both processes.
    return make_tiny_config(num_train_steps=num_steps, batch_size=16, checkpoint_every_steps=checkpoint_every_steps,
                            **{"moco.enabled": True, "moco.queue_size": 64, "mix.kind": "mixup", "knn.enabled": True,
                               "online_probe.enabled": True})


def describe(workdir, summary):
    """What the test compares: the final checkpoint's parameters and queue, and the run's final loss."""
    ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
    restored = ckpt.restore_subtree(("params", "queue"))
    leaves = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(restored["params"])]
    return {
        "process_index": jax.process_index(), "process_count": jax.process_count(),
        "device_count": jax.device_count(), "local_devices": jax.local_device_count(),
        "steps": summary["steps"], "final_loss": summary["final_loss"], "preempted": summary["preempted"],
        "params_checksum": float(sum(np.abs(x).sum() for x in leaves)),
        "params_first": [float(x.ravel()[0]) for x in leaves],
        "queue_checksum": float(np.abs(np.asarray(restored["queue"]["keys"], np.float64)).sum()),
    }


def main(workdir, num_steps, checkpoint_every_steps=2):
    print(json.dumps(describe(workdir, runner.run(config_for(num_steps, checkpoint_every_steps), workdir))))


if __name__ == "__main__":
    from absl import logging

    logging.use_absl_handler()  # INFO lines on stderr, as under the CLI (test_preemption_multihost reads the steps)
    logging.set_verbosity(logging.INFO)
    main(sys.argv[1], *map(int, sys.argv[2:]))
