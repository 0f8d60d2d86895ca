"""The accelerators `python -m genscl_jax.plan` compiles for: targets by their Cloud TPU or GPU names, each
resolved to its devices (a deviceless topology from libtpu or the CUDA plugin, no hardware needed), its memory and
its published peaks.

TPU slices are named as Cloud TPU names them: v4 and v5p names count TensorCores, two per chip (v4-8 is 4 chips,
2x2x1, one host of 4 chips); v5e (v5litepod) and v6e names count chips (v5e-16 is 16 chips, 4x4, four hosts of 4;
up to 8 chips are one host). NVIDIA GPUs are `NAMExN[,hosts=M]`: N devices per host, M hosts (default 1).

The figures below are the vendors' published ones (`source` of each), and feed only the report: the memory a
program may use and the roofline bound (FLOPs / peak, bytes / bandwidth), never the compile.
XLA's GPU compiler needs a description of the device (its GpuTargetConfigProto); `gpu_target_config` writes one
from the same published facts, one per GPU named (XLA's own spec files carry fields this jaxlib cannot parse).
"""

from __future__ import annotations

import dataclasses
import math
import re

GIB = 1024**3
MIB = 1024**2


class TargetError(ValueError):
    """A target name this module does not know, with the names it does (one line)."""


@dataclasses.dataclass(frozen=True)
class Chip:
    """One device model's published facts."""
    device_kind: str  # as JAX's device.device_kind names it
    memory_bytes: int  # the device's memory a program may use
    peak_bf16_flops: float  # dense bf16 matrix FLOP/s
    memory_bandwidth: float  # bytes/s
    source: str  # where the three figures are published


@dataclasses.dataclass(frozen=True)
class GpuFacts:
    """What XLA's GPU compiler reads from the device description: compute capability, SMs, clocks, caches."""
    compute_capability: tuple[int, int]
    sm_count: int
    fp32_units_per_sm: int
    clock_ghz: float
    l2_bytes: int
    shared_memory_per_sm: int
    shared_memory_per_block_optin: int
    threads_per_sm: int


_TPU = {
    # Cloud TPU system architecture pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e): HBM per chip, peak bf16
    # compute per chip, HBM bandwidth per chip.
    "v4": Chip("TPU v4", 32 * GIB, 275e12, 1228e9, "cloud.google.com/tpu/docs/v4 (32 GiB, 275 TFLOP/s, 1228 GB/s)"),
    "v5e": Chip("TPU v5 lite", 16 * GIB, 197e12, 819e9,
                "cloud.google.com/tpu/docs/v5e (16 GiB, 197 TFLOP/s, 819 GB/s)"),
    "v5p": Chip("TPU v5", 95 * GIB, 459e12, 2765e9, "cloud.google.com/tpu/docs/v5p (95 GiB, 459 TFLOP/s, 2765 GB/s)"),
    "v6e": Chip("TPU v6 lite", 32 * GIB, 918e12, 1640e9,
                "cloud.google.com/tpu/docs/v6e (32 GiB, 918 TFLOP/s, 1640 GB/s)"),
}
_TPU_ALIASES = {"v5litepod": "v5e"}
_TENSORCORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}
# Chip grids of the slice shapes Cloud TPU offers (3-D for v4/v5p, 2-D for v5e/v6e), by chip count.
_GRID_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
            256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16), 4096: (16, 16, 16)}
_GRID_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}

# What XLA's GPU compiler reads of each architecture: the SXM boards' (NVIDIA's architecture whitepapers).
_HOPPER = GpuFacts((9, 0), 132, 128, 1.98, 50 * MIB, 228 * 1024, 227 * 1024, 2048)
_AMPERE = GpuFacts((8, 0), 108, 64, 1.41, 40 * MIB, 164 * 1024, 163 * 1024, 2048)
# Memory: the total the driver reports (nvidia-smi) for each board. Peaks: NVIDIA's datasheets, dense (no
# sparsity) bf16 Tensor Core FLOP/s and memory bandwidth of the SXM (H100, H200, A100) or PCIe (L4) board.
_GPU = {
    "h100-80gb": (Chip("NVIDIA H100 80GB HBM3", 81559 * MIB, 989e12, 3.35e12,
                       "NVIDIA H100 Tensor Core GPU datasheet, SXM5 (989 TFLOP/s bf16 dense, 3.35 TB/s)"), _HOPPER),
    "h200": (Chip("NVIDIA H200", 143771 * MIB, 989e12, 4.8e12,
                  "NVIDIA H200 Tensor Core GPU datasheet, SXM (989 TFLOP/s bf16 dense, 4.8 TB/s)"), _HOPPER),
    "a100-80gb": (Chip("NVIDIA A100-SXM4-80GB", 81920 * MIB, 312e12, 2.039e12,
                       "NVIDIA A100 Tensor Core GPU datasheet, SXM 80GB (312 TFLOP/s bf16 dense, 2039 GB/s)"), _AMPERE),
    "a100-40gb": (Chip("NVIDIA A100-SXM4-40GB", 40960 * MIB, 312e12, 1.555e12,
                       "NVIDIA A100 Tensor Core GPU datasheet, SXM 40GB (312 TFLOP/s bf16 dense, 1555 GB/s)"), _AMPERE),
    "l4": (Chip("NVIDIA L4", 23034 * MIB, 121e12, 300e9,
                "NVIDIA L4 Tensor Core GPU datasheet (121 TFLOP/s bf16 dense, 300 GB/s)"),
           GpuFacts((8, 9), 58, 128, 2.04, 48 * MIB, 100 * 1024, 99 * 1024, 1536)),
}
# The cuDNN the CUDA plugin of jaxlib 0.10 is built for (its wheel requires nvidia-cudnn-cu12>=9.8,<10).
_CUDNN_VERSION = (9, 8, 0)


@dataclasses.dataclass(frozen=True)
class Target:
    name: str  # as given
    platform: str  # "tpu" or "gpu"
    chip: Chip
    num_devices: int
    hosts: int
    topology: str  # libtpu's "v5e:4x4", or the CUDA plugin's "1xHOSTSxN"
    devices_per_host: int
    chips_per_host_bounds: tuple[int, int, int] = (1, 1, 1)  # TPU: one host's block of chips (libtpu's option)
    gpu: GpuFacts | None = None

    def describe(self) -> str:
        return f"{self.name}: {self.num_devices} x {self.chip.device_kind} on {self.hosts} host(s)"


def known_targets() -> str:
    return ("TPU: v4-8 ... v4-512, v5p-8 ..., v5e-1/v5litepod-1 ... v5e-256, v6e-1 ... v6e-256; "
            f"GPU: {', '.join(_GPU)} as NAMExN[,hosts=M], e.g. h100-80gbx8")


def parse_target(name: str) -> Target:
    """`name` -> its Target, or TargetError naming what is wrong and what is known."""
    text = name.strip().lower()
    tpu = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", text)
    if tpu:
        return _tpu_target(name, _TPU_ALIASES.get(tpu.group(1), tpu.group(1)), int(tpu.group(2)))
    gpu = re.fullmatch(r"([a-z0-9-]+?)x(\d+)(?:,hosts=(\d+))?", text)
    if gpu and gpu.group(1) in _GPU:
        per_host, hosts = int(gpu.group(2)), int(gpu.group(3) or 1)
        if per_host < 1 or hosts < 1:
            raise TargetError(f"unknown target {name!r}: devices per host and hosts must be at least 1")
        chip, facts = _GPU[gpu.group(1)]
        return Target(name, "gpu", chip, per_host * hosts, hosts, f"1x{hosts}x{per_host}", per_host, gpu=facts)
    raise TargetError(f"unknown target {name!r}; known: {known_targets()}")


def _tpu_target(name: str, generation: str, count: int) -> Target:
    per_chip = _TENSORCORES_PER_CHIP[generation]
    chips = count // per_chip if count % per_chip == 0 else 0
    grids = _GRID_3D if per_chip == 2 else _GRID_2D
    if chips not in grids:
        sizes = ", ".join(f"{generation}-{n * per_chip}" for n in grids)
        raise TargetError(f"unknown target {name!r}: Cloud TPU {generation} slices are {sizes}")
    grid = grids[chips]
    # One host holds 4 chips (a 2x2x1 block), except v5e/v6e slices of up to 8 chips, which are one host.
    per_host = (2, 2, 1) if chips > 8 or per_chip == 2 else (*grid, 1)[:3]
    devices_per_host = math.prod(per_host)
    return Target(name, "tpu", _TPU[generation], chips, chips // devices_per_host,
                  f"{generation}:{'x'.join(map(str, grid))}", devices_per_host, per_host)


def gpu_target_config(target: Target) -> str:
    """XLA's GpuTargetConfigProto (text format) for the target's GPU, from its published facts."""
    chip, f = target.chip, target.gpu
    assert f is not None, "gpu_target_config: not a GPU target"
    major, minor = f.compute_capability
    return "\n".join([
        "gpu_device_info {",
        "  threads_per_block_limit: 1024", "  threads_per_warp: 32", "  shared_memory_per_block: 49152",
        f"  shared_memory_per_core: {f.shared_memory_per_sm}", f"  threads_per_core_limit: {f.threads_per_sm}",
        f"  core_count: {f.sm_count}", f"  fpus_per_core: {f.fp32_units_per_sm}",
        "  block_dim_limit_x: 2147483647", "  block_dim_limit_y: 65535", "  block_dim_limit_z: 65535",
        f"  memory_bandwidth: {int(chip.memory_bandwidth)}", f"  l2_cache_size: {f.l2_bytes}",
        f"  clock_rate_ghz: {f.clock_ghz}", f"  device_memory_size: {chip.memory_bytes}",
        f"  shared_memory_per_block_optin: {f.shared_memory_per_block_optin}",
        f"  cuda_compute_capability {{ major: {major} minor: {minor} }}",
        "  registers_per_core_limit: 65536", "  registers_per_block_limit: 65536",
        "}",
        'platform_name: "CUDA"',
        "dnn_version_info {{ major: {} minor: {} patch: {} }}".format(*_CUDNN_VERSION),
        f'device_description_str: "{chip.device_kind}"',
    ])
