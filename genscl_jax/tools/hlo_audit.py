"""What a compiled sharded program sends between devices: its collectives, read from the optimised HLO.

Used by the collective audit (benchmarks/collective_audit.py) and by the tests that assert the train step never
gathers images. Bytes are per device and per execution: the size of the collective's result on one device (for
an all-reduce, the reduced buffer; for an all-gather, the gathered buffer; for a collective-permute, what one
device receives). A collective inside a loop body is counted once per appearance, not per trip.
"""

from __future__ import annotations

import dataclasses
import re

# Collective ops as they appear in optimised HLO, synchronous or as the start of an asynchronous pair.
COLLECTIVE_KINDS = ("all-gather", "all-reduce", "reduce-scatter", "collective-permute", "all-to-all")

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.+?)\s+(" + "|".join(COLLECTIVE_KINDS)
                          + r")(-start)?\(")


@dataclasses.dataclass(frozen=True)
class Collective:
    kind: str  # one of COLLECTIVE_KINDS
    shapes: tuple[tuple[str, tuple[int, ...]], ...]  # (dtype, dims) of each array the result carries
    bytes: int  # per device, see the module docstring

    def describe(self) -> str:
        return ", ".join(f"{dtype}[{','.join(map(str, dims))}]" for dtype, dims in self.shapes)


def _arrays(type_text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(dtype, tuple(int(d) for d in dims.split(",") if d)) for dtype, dims in _ARRAY.findall(type_text)]


def _nbytes(dtype: str, dims: tuple[int, ...]) -> int:
    size = _DTYPE_BYTES[dtype]
    for d in dims:
        size *= d
    return size


def collectives(hlo_text: str) -> list[Collective]:
    """Every collective of an HLO module's text (compiled.as_text()), in program order."""
    found = []
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        type_text, kind, is_start = match.groups()
        shapes = [a for a in _arrays(type_text) if a[0] not in ("u32", "s32") or a[1]]  # drop async scalar tokens
        if is_start and kind in ("all-gather", "collective-permute") and len(shapes) > 1:
            # The start of an asynchronous gather/permute carries (operand, result): the result is the traffic.
            shapes = [max(shapes, key=lambda a: _nbytes(*a))]
        found.append(Collective(kind, tuple(shapes), sum(_nbytes(*a) for a in shapes)))
    return found


def image_shaped(collective: Collective, image_shape: tuple[int, int, int]) -> bool:
    """Whether any array the collective carries ends in an image's (height, width, channels)."""
    return any(dims[-3:] == tuple(image_shape) for _, dims in collective.shapes)


def summarize(found: list[Collective]) -> dict[str, dict[str, int]]:
    """{kind: {"count", "bytes"}} over a list of collectives."""
    summary: dict[str, dict[str, int]] = {}
    for c in found:
        entry = summary.setdefault(c.kind, {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += c.bytes
    return summary


# The optimised program's convolutions and matmuls by element type and layout, and its layout changes: what the
# accelerator audit of the plan command reads (BENCHMARKS.md, "Compiled for the accelerators").
_OP = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*\(?(\w+)\[[\d,]*\][^=]*?\s(convolution|dot|transpose|copy|"
                 r"custom-call)\(")
_DIM_LABELS = re.compile(r"dim_labels=([\w]+_[\w]+->[\w]+)")
_TARGET = re.compile(r'custom_call_target="([^"]+)"')


def compute_ops(hlo_text: str) -> dict[str, dict[str, int]]:
    """{"convolution": {dtype: n}, "dot": {...}, "transpose": {...}, "copy": {...}, "conv_layouts": {labels: n}} over
    every computation of an optimised module (fused ones included). cuDNN's convolutions (GPU custom calls) count as
    convolutions; their dim_labels say the layout (b01f: NHWC, bf01: NCHW)."""
    found: dict[str, dict[str, int]] = {k: {} for k in ("convolution", "dot", "transpose", "copy", "conv_layouts")}
    for line in hlo_text.splitlines():
        match = _OP.match(line)
        if not match:
            continue
        dtype, op = match.groups()
        if op == "custom-call":
            target = _TARGET.search(line)
            if not target or "conv" not in target.group(1).lower():
                continue
            op = "convolution"
        found[op][dtype] = found[op].get(dtype, 0) + 1
        labels = _DIM_LABELS.search(line) if op == "convolution" else None
        if labels:
            found["conv_layouts"][labels.group(1)] = found["conv_layouts"].get(labels.group(1), 0) + 1
    return found


_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_TRANSPOSE = re.compile(r"=\s*(\w+)\[([\d,]*)\]\{[^}]*\}\s+transpose\(.*?dimensions=\{([\d,]*)\}")


@dataclasses.dataclass(frozen=True)
class Transpose:
    dtype: str
    dims: tuple[int, ...]  # the result's
    permutation: tuple[int, ...]
    bytes: int  # the result's; the kernel reads as many

    @property
    def filter_layout(self) -> bool:
        """HWIO -> OHWI: a convolution's filter laid out for cuDNN (flax keeps kernels HWIO)."""
        return self.permutation == (3, 0, 1, 2)


def standalone_transposes(hlo_text: str) -> list[Transpose]:
    """The transposes XLA:GPU runs as kernels of their own (in its `wrapped_transpose_computation`s): each is one pass
    over its array. A transpose fused into another kernel (most of them) is part of that kernel's access pattern."""
    found, computation = [], ""
    for line in hlo_text.splitlines():
        header = None if line.startswith(" ") else _COMPUTATION.match(line)
        if header:
            computation = header.group(1)
            continue
        match = _TRANSPOSE.search(line) if computation.startswith("wrapped_transpose") else None
        if match:
            dtype, dims, permutation = match.groups()
            shape = tuple(int(d) for d in dims.split(",") if d)
            found.append(Transpose(dtype, shape, tuple(int(p) for p in permutation.split(",") if p),
                                   _nbytes(dtype, shape)))
    return found
