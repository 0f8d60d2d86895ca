"""PyTorch ResNet weights (torchvision or timm resnet18..152) as Flax variables of models.ResNet.

Reading a file never runs pickled code: .pth/.pt go through torch.load(weights_only=True), which only rebuilds
tensors and plain containers; .safetensors holds no code at all and is read with the safetensors package's NumPy
API, without torch. torch is imported only for .pth/.pt files (pip install -r requirements-torch.txt).

timm's plain ResNets (resnet18 .. resnet152, not the deep-stem "c/d/s/t" or avg-down variants) use torchvision's
key names, so one table serves both; models/resnet.py's docstring lists it. The converter walks the variables the
Flax model expects, so every missing, unexpected or mis-shaped weight is reported by its PyTorch key.
`to_state_dict` is the inverse (Flax variables -> torchvision names), what export.py writes.
"""

from __future__ import annotations

import io
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np

from genscl_jax import models


class ConversionError(ValueError):
    """A PyTorch weights file that cannot be read or does not fit the module; the message names the file or layer."""

TORCH_SUFFIXES = (".pth", ".pt")
SAFETENSORS_SUFFIX = ".safetensors"
# Running statistics torch keeps but Flax's BatchNorm has no use for.
_IGNORED_SUFFIXES = (".num_batches_tracked",)
# Flax BatchNorm name -> torchvision name, per collection.
_BN_NAMES = {("params", "scale"): "weight", ("params", "bias"): "bias",
             ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def is_torch_weights_file(path: str) -> bool:
    return str(path).endswith(TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,))


# ---------------------------------------------------------------------------------------------------------------
# Reading files.


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """A weights file as {torch key: NumPy array}; checkpoints wrapping the state_dict are unwrapped."""
    from etils import epath  # local paths and gs:// alike

    file = epath.Path(path)
    if not file.is_file():
        raise ConversionError(f"teacher {path}: no such file")
    if str(path).endswith(SAFETENSORS_SUFFIX):
        return _read_safetensors(path, file.read_bytes())
    if str(path).endswith(TORCH_SUFFIXES):
        return _read_torch(path, file.read_bytes())
    raise ConversionError(f"teacher {path}: unknown file type; expected {', '.join(TORCH_SUFFIXES)} or "
                       f"{SAFETENSORS_SUFFIX}")


def _read_safetensors(path: str, data: bytes) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load
    except ImportError:
        raise ConversionError(f"teacher {path}: reading .safetensors needs the safetensors package "
                           "(pip install safetensors)") from None
    try:
        return dict(load(data))
    except Exception as e:  # the package raises its own SafetensorError for corrupt or bf16 files
        raise ConversionError(f"teacher {path}: cannot read the .safetensors file: {_first_line(e)}") from e


def _read_torch(path: str, data: bytes) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ConversionError(f"teacher {path}: reading .pth/.pt needs PyTorch: pip install -r requirements-torch.txt, "
                           "or convert the file to .safetensors") from None
    try:
        # weights_only=True: the unpickler rebuilds tensors and containers only, never calls arbitrary objects.
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError for refused objects, RuntimeError for corrupt archives
        raise ConversionError(f"teacher {path}: refused or unreadable (torch.load with weights_only=True; save "
                           f"model.state_dict(), not the model object): {_first_line(e)}") from e
    state_dict = _unwrap(loaded, path)
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"teacher {path}: {key} is a {type(value).__name__}, not a tensor")
        # NumPy has no bfloat16: floating tensors come out as float32 (parameters are float32 anyway).
        arrays[key] = (value.float() if value.is_floating_point() else value).numpy()
    return arrays


def _unwrap(loaded: Any, path: str) -> Mapping[str, Any]:
    """Training checkpoints often nest the weights ({"state_dict": ...}) and DDP prefixes keys with "module."."""
    if not isinstance(loaded, Mapping):
        raise ConversionError(f"teacher {path}: holds a {type(loaded).__name__}, expected a state_dict")
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
            break
    if loaded and all(k.startswith("module.") for k in loaded):
        loaded = {k[len("module."):]: v for k, v in loaded.items()}
    return loaded


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


# ---------------------------------------------------------------------------------------------------------------
# Converting.


def expected_variables(module: nn.Module, sample_shape: tuple[int, ...]) -> dict:
    """Shapes and dtypes of the variables `module` creates for inputs of `sample_shape` (nothing computed)."""
    return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), np.zeros(sample_shape, np.float32),
                                              train=False))


def convert_resnet(state_dict: Mapping[str, np.ndarray], module: models.ResNet, *, channels: int = 3,
                   source: str = "state_dict") -> dict[str, Any]:
    """Flax {"params", "batch_stats"} for `module` from a torchvision/timm ResNet state_dict.

    `module` is e.g. models.create_resnet("resnet50", stem="imagenet", num_classes=1000); `channels` is the
    number of input channels it will see (3 for ImageNet weights). Fails with ConversionError on the first key that
    is missing, unexpected or of the wrong shape, naming the PyTorch key.
    """
    expected = expected_variables(module, (1, 32, 32, channels))
    entries = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(dict(expected))[0]:
        names = tuple(p.key for p in path)
        key, layout = _torch_entry(names, tuple(leaf.shape))
        entries.append((names, key, layout, _torch_shape(layout, tuple(leaf.shape))))
    # Check in the file's (network) order, missing keys first, so the first error is the earliest layer.
    order = {key: i for i, key in enumerate(state_dict)}
    entries.sort(key=lambda entry: order.get(entry[1], -1))
    converted: dict[str, Any] = {"params": {}, "batch_stats": {}}
    used = set()
    for names, key, layout, torch_shape in entries:
        if key not in state_dict:
            raise ConversionError(f"teacher {source}: {key} is missing{_arch_hint(state_dict, module)}")
        given = np.asarray(state_dict[key])
        if given.shape != torch_shape:
            raise ConversionError(f"teacher {source}: {key} has shape {given.shape}, the model expects {torch_shape}"
                               f"{_shape_hint(key, state_dict, module)}")
        _set(converted, names, np.ascontiguousarray(_TO_FLAX[layout](given)).astype(np.float32))
        used.add(key)
    unexpected = [k for k in state_dict if k not in used and not k.endswith(_IGNORED_SUFFIXES)]
    if unexpected:
        raise ConversionError(f"teacher {source}: unexpected key {unexpected[0]} ({len(unexpected)} unexpected in all)"
                           f"{_arch_hint(state_dict, module)}")
    return converted


def to_state_dict(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """torchvision-named arrays (conv1.weight, bn1.running_mean, layer1.0.conv1.weight, ...) for Flax
    {"params", "batch_stats"} of a models.ResNet, the inverse of convert_resnet.

    Every BatchNorm also gets num_batches_tracked (0: Flax does not count batches, and torch only reads it when
    momentum=None), so the result loads with strict=True. Layers outside the ResNet table (e.g. a projection head
    "head/dense1") keep their Flax path as the module name: head.dense1.weight [out, in], head.dense1.bias.
    """
    state_dict: dict[str, np.ndarray] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(dict(variables))[0]:
        names = tuple(p.key for p in path)
        array = np.asarray(leaf)
        key, layout = _torch_entry(names, array.shape)
        state_dict[key] = np.ascontiguousarray(_TO_TORCH[layout](array))
        if key.endswith(".running_var"):
            state_dict[key[:-len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return state_dict


# Array layouts: a conv kernel is OIHW in torch and HWIO in Flax; a Linear weight is [out, in] in torch and a Dense
# kernel [in, out]; everything else (biases, BatchNorm) is the same in both.
_TO_FLAX = {"conv": lambda a: a.transpose(2, 3, 1, 0), "linear": lambda a: a.T, "same": lambda a: a}
_TO_TORCH = {"conv": lambda a: a.transpose(3, 2, 0, 1), "linear": lambda a: a.T, "same": lambda a: a}


def _torch_shape(layout: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    if layout == "conv":
        h, w, i, o = flax_shape
        return o, i, h, w
    return tuple(reversed(flax_shape)) if layout == "linear" else flax_shape


def _torch_entry(names: tuple[str, ...], flax_shape: tuple[int, ...]):
    """(torch key, array layout) for one Flax variable."""
    collection, *layers, leaf = names
    module_name = ".".join(_torch_module_name(layer) for layer in layers)
    if collection == "params" and leaf == "kernel":
        return f"{module_name}.weight", "conv" if len(flax_shape) == 4 else "linear"
    return f"{module_name}.{_BN_NAMES[(collection, leaf)]}", "same"


def _torch_module_name(flax_name: str) -> str:
    fixed = {"conv_init": "conv1", "bn_init": "bn1", "proj_conv": "downsample.0", "proj_bn": "downsample.1"}
    if flax_name in fixed:
        return fixed[flax_name]
    match = re.fullmatch(r"stage(\d+)_block(\d+)", flax_name)
    if match:
        return f"layer{match[1]}.{match[2]}"
    return flax_name  # conv1..3, bn1..3 and fc keep their names


def _set(tree: dict, names: tuple[str, ...], value: np.ndarray) -> None:
    for name in names[:-1]:
        tree = tree.setdefault(name, {})
    tree[names[-1]] = value


# ---------------------------------------------------------------------------------------------------------------
# Error hints: say what the file looks like, not just which key failed.


def guess_resnet(keys) -> str | None:
    """The resnet name whose block layout matches the state_dict's keys (None if none does)."""
    blocks: dict[int, set[int]] = {}
    for key in keys:
        match = re.match(r"layer(\d+)\.(\d+)\.", key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    stage_sizes = tuple(len(blocks[s]) for s in sorted(blocks))
    bottleneck = any(re.match(r"layer\d+\.\d+\.conv3\.", k) for k in keys)
    for name in models.MODEL_NAMES:
        candidate = models.create_resnet(name)
        if (tuple(candidate.stage_sizes) == stage_sizes
                and (candidate.block_cls is models.BottleneckBlock) == bottleneck):
            return name
    return None


def _arch_hint(state_dict: Mapping[str, Any], module: models.ResNet) -> str:
    guess = guess_resnet(state_dict)
    wanted = _module_name(module)
    if guess and wanted and guess != wanted:
        return f" (the file looks like a {guess}, the model is a {wanted}: set config.kd.teacher_model={guess})"
    if guess is None:
        return " (the file is not a torchvision/timm resnet18..152 state_dict)"
    return ""


def _shape_hint(key: str, state_dict: Mapping[str, Any], module: models.ResNet) -> str:
    if key.startswith("fc."):
        return (f" (wrong number of classes? the teacher's classifier must have one output per class of the "
                f"dataset, here {module.num_classes})")
    if key == "conv1.weight":
        return (" (PyTorch ImageNet ResNets need the 'imagenet' stem, width_multiplier 1 and the dataset's "
                "channel count)")
    return _arch_hint(state_dict, module)


def _module_name(module: models.ResNet) -> str | None:
    for name in models.MODEL_NAMES:
        candidate = models.create_resnet(name)
        if tuple(candidate.stage_sizes) == tuple(module.stage_sizes) and candidate.block_cls is module.block_cls:
            return name
    return None
