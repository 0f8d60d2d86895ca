"""The compiled 8-device pretraining step sends no image-sized traffic beyond one local shard: mixing partners
come from a collective-permute, never from gathering the global image batch (benchmarks/collective_audit.py)."""

import json
import os
import subprocess
import sys

import pytest

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
