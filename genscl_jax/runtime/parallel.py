"""Devices, mesh and shardings: the one place that knows how arrays are laid out across devices and hosts.

The whole run uses a 1-D mesh over every device of every process (axis "data"). The global batch is one array
sharded on its leading axis; the train state is replicated. Because jit sees the global batch, BatchNorm
statistics and the contrast set of the loss span all devices and hosts without any explicit collective.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
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


def settled(tree: Any) -> Any:
    """`tree`, waited for when its arrays live on the CPU devices of several processes; else returned at once.

    Evaluation loops dispatch one program with collectives per batch (features gathered for the kNN bank, accuracy
    counts summed over devices), none waiting for the one before. Between processes, CPU collectives go through
    gloo, and with several such programs in flight the two processes of tests/test_multihost.py deadlocked in them
    (2026-12-08, 3 of 3 runs on this 2-core machine with other work beside them: each process stuck in a different
    program). The loops pass each result through here, so on CPU one such program runs at a time; GPUs and TPUs
    order every device's programs and keep their asynchronous dispatch.
    """
    devices = {d for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "sharding") for d in x.sharding.device_set}
    if devices and all(d.platform == "cpu" for d in devices) and len({d.process_index for d in devices}) > 1:
        jax.block_until_ready(tree)
    return tree


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


@dataclasses.dataclass(frozen=True)
class ExampleLayout:
    """Inside jit: how a step keeps arrays of examples [N, ...] sharded by examples over `mesh` (None: one device,
    nothing to keep). The training steps' images go through it (trainers/step_inputs.py)."""
    mesh: Mesh | None = None

    def sharded(self, x: jax.Array) -> jax.Array:
        """x laid out sharded by examples."""
        return x if self.mesh is None else jax.lax.with_sharding_constraint(x, batch_sharded(self.mesh))

    def rolled(self, x: jax.Array, shift: int) -> jax.Array:
        """Row i of the result is row (i + shift) mod N of x (jnp.roll(x, -shift, axis=0)), sharded by examples.

        Written per device: each device keeps the rows it has and receives the few it lacks from the device after it
        by collective-permute (`shift` rows in all for a shift smaller than a shard). A jnp.roll over the sharded
        axis leaves that to XLA's partitioner, which for GPUs resharded the whole batch along the image height by
        all-to-all and back, 6 all-to-alls of 2354 MiB per GPU per step at the ImageNet recipe (BENCHMARKS.md 11.2).
        """
        if self.mesh is None or self.mesh.size == 1:
            return jnp.roll(x, -shift, axis=0)
        return jax.shard_map(functools.partial(_rolled_shard, shift=shift, num_shards=self.mesh.size),
                             mesh=self.mesh, in_specs=PartitionSpec(DATA_AXIS),
                             out_specs=PartitionSpec(DATA_AXIS))(x)


ONE_DEVICE = ExampleLayout()  # the steps' default layout: nothing sharded, partners by jnp.roll


def _rolled_shard(block: jax.Array, *, shift: int, num_shards: int) -> jax.Array:
    """ExampleLayout.rolled on one device's rows [n, ...]: global row d * n + i takes row d * n + i + shift, i.e.
    rows [r, n) of shard d + q and rows [0, r) of shard d + q + 1, where q, r = divmod(shift mod N, n)."""
    rows = block.shape[0]
    q, r = divmod(shift % (rows * num_shards), rows)

    def from_shard_ahead(part: jax.Array, ahead: int) -> jax.Array:
        if ahead % num_shards == 0:
            return part
        return jax.lax.ppermute(part, DATA_AXIS, [(j, (j - ahead) % num_shards) for j in range(num_shards)])

    head = from_shard_ahead(block[r:], q)
    if r == 0:
        return head
    return jnp.concatenate([head, from_shard_ahead(block[:r], q + 1)], axis=0)


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
