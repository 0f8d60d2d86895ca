"""The compiled 8-device pretraining step sends no image-sized traffic beyond one local shard: mixing partners
come from a collective-permute, never from gathering the global image batch (benchmarks/collective_audit.py)."""

import collections
import json
import os
import subprocess
import sys
import types

import jax
import pytest

from helpers import run_on_eight_devices

from genscl_jax.runtime import parallel
from genscl_jax.tools import hlo_audit

ROOT = os.path.join(os.path.dirname(__file__), "..")

# A compiled fragment in the form XLA:CPU prints it, with a gathered image batch and a permuted local shard.
HLO = """
  %all-gather = f32[2,16,40,40,3]{4,3,2,1,0} all-gather(f32[2,2,40,40,3]{4,3,2,1,0} %p), channel_id=1, dimensions={1}
  %collective-permute = f32[1,40,40,3]{3,2,1,0} collective-permute(%slice), channel_id=2, source_target_pairs={{0,7}}
  %all-reduce.1 = (f32[3,3,4,4]{3,2,1,0}, f32[4]{0}) all-reduce(%a, %b), channel_id=3, replica_groups={{0,1}}
  ROOT %ag-start = (bf16[4,8]{1,0}, bf16[32,8]{1,0}) all-gather-start(bf16[4,8]{1,0} %x), dimensions={0}
  %fusion = f32[2,40,40,3]{3,2,1,0} fusion(%all-gather), kind=kLoop, calls=%fused_computation
"""


def test_hlo_parser_reads_kinds_shapes_and_bytes():
    found = hlo_audit.collectives(HLO)
    assert [c.kind for c in found] == ["all-gather", "collective-permute", "all-reduce", "all-gather"]
    assert [c.bytes for c in found] == [2 * 16 * 40 * 40 * 3 * 4, 40 * 40 * 3 * 4, (144 + 4) * 4, 32 * 8 * 2]
    assert [hlo_audit.image_shaped(c, (40, 40, 3)) for c in found] == [True, True, False, False]
    assert hlo_audit.summarize(found)["all-gather"] == {"count": 2, "bytes": 2 * 16 * 40 * 40 * 3 * 4 + 512}


@pytest.mark.slow
@pytest.mark.parametrize("micro_batch_size", [0, 1])
def test_eight_device_step_never_gathers_images(micro_batch_size):
    """Mixup-CutMix, the EMA key encoder + queue and a teacher: every path that touches images; dense, and in two
    strided micro-batches (one image per device each), which must be formed without moving images."""
    args = ["--devices", "8", "--per-device-batch", "2", "--model", "resnet10", "--width", "0.0625",
            "--image-size", "24", "--queue-size", "64", "--head-dim", "8", "--num-classes", "10", "--json", "-",
            "--micro-batch-size", str(micro_batch_size)]
    proc = subprocess.run([sys.executable, "benchmarks/collective_audit.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    audit = json.loads(proc.stdout.strip().splitlines()[-1])
    assert audit["shape"]["teacher"] and audit["shape"]["mix"] == "mixup_cutmix" and audit["shape"]["queue"] == 64
    assert audit["shape"]["micro_batch_size"] == 8 * micro_batch_size
    images = [c for c in audit["collectives"] if c["image_shaped"]]
    assert not [c for c in images if c["kind"] != "collective-permute"], images
    assert images, "mixing partners should arrive by collective-permute"
    assert sum(c["bytes"] for c in images) <= audit["local_image_shard_bytes"]
    assert audit["totals"]["all-reduce"]["count"] > 0  # gradients and BatchNorm statistics are still reduced


# The blocked loss on 8 devices, anchors sharded by rows as in the step, against all-vs-all contrasts.
BLOCKED_LOSS = """
import json, jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from genscl_jax.objectives import loss_chunked, losses
from genscl_jax.tools import hlo_audit
mesh = Mesh(np.array(jax.devices()), ("data",))
rows, whole = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
n, m, d, c = 512, 2048, 16, 10
def loss_and_grad(loss):
    fn = lambda f, y, cf, cy: loss(f, y, contrast_features=cf, contrast_labels=cy, exclude_self=False)
    return jax.jit(jax.value_and_grad(fn), in_shardings=(rows, rows, whole, whole))
key = jax.random.split(jax.random.PRNGKey(0), 4)
f, cf = (x / jnp.linalg.norm(x, axis=1, keepdims=True) for x in (jax.random.normal(key[0], (n, d)),
                                                                 jax.random.normal(key[1], (m, d))))
y = jax.nn.one_hot(jax.random.randint(key[2], (n,), 0, c), c)
cy = jax.nn.one_hot(jax.random.randint(key[3], (m,), 0, c), c)
out = {}
for name, loss in (("dense", losses.generalized_supcon_loss),
                   ("blocked", lambda *a, **k: loss_chunked.generalized_supcon_loss_chunked(*a, block_size=64, **k))):
    step = loss_and_grad(loss)
    compiled = step.lower(f, y, cf, cy).compile()
    value, grad = step(f, y, cf, cy)
    out[name] = {"value": float(value), "grad": np.asarray(grad).tolist(),
                 "temp": compiled.memory_analysis().temp_size_in_bytes,
                 "gathers": [c.bytes for c in hlo_audit.collectives(compiled.as_text()) if c.kind == "all-gather"]}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_eight_device_blocked_loss_scores_each_devices_own_anchors():
    """loss_block_size on a sharded batch: each block takes block_size / 8 rows of every device's shard, so no
    anchor is gathered, and each device's [rows, contrasts] working set is its share of one block. (Contiguous
    blocks each lay on one device: every device gathered and scored every block.)"""
    out = run_on_eight_devices("-c", BLOCKED_LOSS)
    dense, blocked = out["dense"], out["blocked"]
    assert abs(blocked["value"] - dense["value"]) < 1e-5
    assert max(abs(a - b) for ra, rb in zip(blocked["grad"], dense["grad"]) for a, b in zip(ra, rb)) < 1e-6
    assert blocked["gathers"] == dense["gathers"] == [], (blocked["gathers"], dense["gathers"])
    # Per device, dense holds several [64, 2048] float32 matrices (512 KiB each); a block, [8, 2048] ones.
    assert blocked["temp"] < dense["temp"] / 2, (blocked["temp"], dense["temp"])


# ExampleLayout.rolled on 8 devices against jnp.roll: shifts inside a shard, across one and across several.
ROLLED = """
import json, jax, jax.numpy as jnp, numpy as np
from genscl_jax.runtime import parallel
from genscl_jax.tools import hlo_audit
mesh = parallel.create_mesh()
layout = parallel.ExampleLayout(mesh)
out = {"equal": [], "kinds": []}
for rows in (8, 24):
    x = jax.device_put(jnp.arange(rows * 6, dtype=jnp.float32).reshape(rows, 2, 3), parallel.batch_sharded(mesh))
    for shift in (0, 1, 2, 3, 4, 7, 8, 11, rows - 1, rows, rows + 5, -1):
        rolled = jax.jit(lambda x: layout.rolled(x, shift))
        same = np.array_equal(np.asarray(rolled(x)), np.roll(np.asarray(x), -shift, axis=0))
        out["equal"].append([rows, shift, bool(same)])
        out["kinds"] += [c.kind for c in hlo_audit.collectives(rolled.lower(x).compile().as_text())]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_eight_device_partners_are_rolled_by_collective_permutes_only():
    """The mixing partners' roll (parallel.ExampleLayout.rolled) equals jnp.roll for shifts within a shard,
    across shard boundaries and past the batch, and moves rows only by collective-permute (XLA's partitioner
    resharded a jnp.roll of a sharded batch by all-to-all for GPUs: tests/test_plan.py checks that program)."""
    out = run_on_eight_devices("-c", ROLLED)
    assert all(same for _, _, same in out["equal"]), [e for e in out["equal"] if not e[2]]
    assert set(out["kinds"]) == {"collective-permute"}, out["kinds"]


FakeDevice = collections.namedtuple("FakeDevice", "id platform process_index")


def _fake_array(platform, process_indices):
    devices = {FakeDevice(n, platform, i) for n, i in enumerate(process_indices)}
    return types.SimpleNamespace(sharding=types.SimpleNamespace(device_set=devices))


def test_results_on_several_processes_cpu_devices_are_waited_for(monkeypatch):
    """Two processes' CPU devices deadlocked in gloo with several evaluation programs in flight: evaluation loops
    pass each result through parallel.settled, which waits there; on one process's CPU devices, or on GPUs and
    TPUs of several processes, it returns at once (asynchronous dispatch kept)."""
    waited = []
    monkeypatch.setattr(jax, "block_until_ready", waited.append)
    for platform, processes in (("cpu", [0, 0, 0, 0]), ("gpu", [0, 0, 1, 1]), ("tpu", [0, 1])):
        tree = {"counts": _fake_array(platform, processes), "step": 3}
        assert parallel.settled(tree) is tree
    assert waited == []
    tree = {"counts": _fake_array("cpu", [0, 0, 1, 1]), "step": 3}
    assert parallel.settled(tree) is tree and waited == [tree]
