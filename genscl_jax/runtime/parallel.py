"""Devices, mesh and shardings: the one place that knows how arrays are laid out across devices and hosts.

The whole run uses a 1-D mesh over every device of every process (axis "data"). The global batch is one array
sharded on its leading axis; the train state is replicated. Because jit sees the global batch, BatchNorm
statistics and the contrast set of the loss span all devices and hosts without any explicit collective.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed() -> None:
    """Starts JAX's multi-controller runtime when this run spans several processes.

    Explicit: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (any cluster, launch/tpu_worker.sh).
    SLURM with several tasks and Cloud TPU VMs are detected by jax.distributed itself (a TPU VM's slice layout comes
    from its metadata server, not from environment variables). A single-process run does nothing.
    """
    explicit = "JAX_COORDINATOR_ADDRESS" in os.environ
    on_slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    on_tpu_vm = any(os.path.exists(p) for p in ("/dev/accel0", "/dev/vfio/0"))
    if not (explicit or on_slurm or on_tpu_vm):
        return
    # Cross-process collectives between CPU devices (tests, CPU clusters) need gloo; GPUs and TPUs ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]))
    elif on_slurm:
        jax.distributed.initialize()
    else:
        try:  # a multi-host slice initialises; a single-host TPU VM has nothing to join and stays single-process
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as e:
            logging.info("jax.distributed not started on this TPU VM (single host?): %s", e)


def create_mesh(devices: list[Any] | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def mesh_platform(mesh: Mesh) -> str:
    """The platform ("cpu", "gpu", "tpu") of the devices a program over `mesh` is compiled for: what every
    platform-dependent choice reads, not the host's default backend (a deviceless TPU or GPU mesh is compiled from
    a CPU host; DESIGN.md)."""
    return mesh.devices.flat[0].platform


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def jit_train_step(step: Callable, mesh: Mesh, *, num_replicated_args: int = 0,
                   compiler_options: dict[str, Any] | None = None):
    """The one jit of every trainer's step(state, batch, *extra): the state replicated and donated, the batch
    sharded on its leading axis, `num_replicated_args` extra arguments (e.g. teacher variables) replicated; the
    new state and the metrics come back replicated. `compiler_options`: compile_options.model_jit_options's."""
    replicated_, sharded = replicated(mesh), batch_sharded(mesh)
    return jax.jit(step, in_shardings=(replicated_, sharded) + (replicated_,) * num_replicated_args,
                   out_shardings=replicated_, donate_argnums=(0,), compiler_options=compiler_options or None)


def replicated_constraint(mesh: Mesh):
    """Inside jit: tree -> the same tree laid out whole on every device of `mesh`."""
    sharding = replicated(mesh)
    return lambda tree: jax.lax.with_sharding_constraint(tree, sharding)


def batch_sharded_constraint(mesh: Mesh):
    """Inside jit: array -> the same array laid out sharded by examples (its leading axis) over `mesh`."""
    sharding = batch_sharded(mesh)
    return lambda x: jax.lax.with_sharding_constraint(x, sharding)


def global_batch_from_local(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's share of the batch into one global array sharded on the leading axis."""
    sharding = batch_sharded(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a host pytree (identical on every process) on all devices."""
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx: np.asarray(x)[idx]), tree)
