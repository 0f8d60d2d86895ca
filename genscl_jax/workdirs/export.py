"""python -m genscl_jax.export --workdir W --output FILE [--with-head]: a run's trained encoder, for use elsewhere.

W is the workdir of a pretrain, supervised or pretrain_and_eval run (local or gs://); its newest checkpoint is
read, with the architecture the run recorded. FILE's ending picks the format (FILE may be a gs:// URL too):

  .safetensors   torchvision ResNet names (conv1.weight, bn1.running_mean, layer1.0.conv1.weight,
                 layer4.0.downsample.0.weight, ...), so an ImageNet-stem encoder loads into
                 torchvision.models.resnet50() (fc = torch.nn.Identity(), or strict=False).
  .npz           the Flax variables, flat keys "params/stage1_block0/conv1/kernel", "batch_stats/...".
  no extension   an orbax checkpoint directory of the Flax variables {"params", "batch_stats"}.

Only the encoder by default; --with-head adds the projection head (pretrain: head.dense1.weight ... in
.safetensors, the contrastive model's variables otherwise) or the classifier (supervised: fc.weight / fc.bias).

torchvision has no CIFAR stem (3x3 stride-1 conv1, no max-pool), no width multiplier and no resnet10/resnet200:
such encoders are still written with torchvision's names, and a note says what a torchvision model needs to
hold them (e.g. model.conv1 = nn.Conv2d(C, 64, 3, 1, 1, bias=False) with the encoder's C input channels;
model.maxpool = nn.Identity()).

Every file carries the run's input contract (workdirs/input_contract.py: channels, image size, mean and std, pixel
range, dtype, feature dimension, architecture) as JSON: the .safetensors metadata and an .npz entry named
"genscl_jax.input_contract", input_contract.json inside the orbax directory; a note prints the torchvision
transform (ToTensor, then Normalize with the run's mean and std).
"""

from __future__ import annotations

import argparse
import io
import sys
from typing import Any

import numpy as np

from genscl_jax.runtime import paths

FILE_FORMATS = (".safetensors", ".npz")


class ExportError(ValueError):
    """Bad arguments; the one-line message names the path and the fix."""


def export(workdir: str, output: str, *, with_head: bool = False) -> list[str]:
    """Writes the trained encoder of `workdir` to `output` in the format its ending picks; returns notes for the
    user (what a torchvision model needs to hold it), empty when there is nothing to say."""
    output_format = format_of(output)  # before any reading: a wrong name fails at once
    if output_format == "orbax" and paths.exists(output):
        raise ExportError(f"--output {output} exists: remove it or choose a new directory (an orbax export is a "
                          "directory and is never written over)")
    from genscl_jax.models import torch_conversion  # JAX and orbax only once the arguments are good
    from genscl_jax.workdirs import input_contract, trained_network

    try:
        trained = trained_network.load_trained(workdir, with_head=with_head)
    except trained_network.EncoderError as e:
        raise ExportError(str(e)) from e
    contract = trained.contract.to_json() if trained.contract else None
    if output_format == ".safetensors":
        try:
            from safetensors.numpy import save
        except ImportError:  # a core dependency; missing only from an environment installed by hand
            raise ExportError(f"--output {output}: writing .safetensors needs the safetensors package: pip install "
                              "safetensors (or write .npz)") from None

        metadata = {input_contract.METADATA_KEY: contract} if contract else None
        _write_bytes(output, save(torch_conversion.to_state_dict(torch_layout(trained.variables)), metadata=metadata))
        return contract_notes(trained) + torchvision_notes(trained.config, trained.input_channels)
    if output_format == ".npz":
        buffer = io.BytesIO()
        np.savez(buffer, **flat_arrays(trained.variables),
                 **({input_contract.METADATA_KEY: np.array(contract)} if contract else {}))
        _write_bytes(output, buffer.getvalue())
        return contract_notes(trained)
    from genscl_jax.training import checkpointing

    checkpointing.write_tree(output, trained.variables)
    if contract:
        paths.write_text(paths.join(output, input_contract.CONTRACT_FILE), contract)
    return contract_notes(trained)


def contract_notes(trained: Any) -> list[str]:
    """How to feed the exported encoder: its input contract in words, or why there is none."""
    from genscl_jax.workdirs import input_contract

    contract = trained.contract
    if contract is None:
        return [f"no {input_contract.CONTRACT_FILE} in the workdir (trained before runs recorded it), so the file "
                "carries no input contract (mean, std): rerun the training command once to record it, then export"]
    return [f"input: {contract.layout} {contract.image_size}x{contract.image_size}x{contract.channels}, "
            f"{contract.normalization}; in torchvision: {contract.torchvision_transform()} (from torchvision import "
            f"transforms); recorded in the file ({input_contract.METADATA_KEY})"]


def format_of(output: str) -> str:
    """".safetensors", ".npz" or "orbax" (a name without extension); ExportError for any other ending."""
    name = output.rstrip("/").rsplit("/", 1)[-1]
    suffix = "." + name.rsplit(".", 1)[1] if "." in name.lstrip(".") else ""
    if suffix in FILE_FORMATS:
        return suffix
    if not suffix:
        return "orbax"
    raise ExportError(f"--output {output}: unknown extension {suffix}; use .safetensors (torchvision names), .npz "
                      "(Flax variables) or a directory name without extension (orbax)")


def torch_layout(variables: dict[str, Any]) -> dict[str, Any]:
    """The contrastive model's {"encoder": ..., "head": ...} flattened so the encoder has torchvision's top-level
    names and the head becomes head.*; a plain ResNet (with or without fc) is already laid out that way."""
    params, batch_stats = variables["params"], variables["batch_stats"]
    if "encoder" not in params:
        return variables
    return {"params": {**params["encoder"], **({"head": params["head"]} if "head" in params else {})},
            "batch_stats": batch_stats["encoder"]}


def flat_arrays(variables: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """{"params/stage1_block0/conv1/kernel": array, ...}: nested dicts as "/"-joined keys."""
    flat = {}
    for name, value in variables.items():
        if isinstance(value, dict):
            flat.update(flat_arrays(value, f"{prefix}{name}/"))
        else:
            flat[f"{prefix}{name}"] = np.asarray(value)
    return flat


def torchvision_notes(config: Any, channels: int) -> list[str]:
    """What differs from a stock torchvision ResNet, and what a torchvision model needs to hold these weights
    (`channels`: the encoder's input channels, its conv1's)."""
    from genscl_jax import models
    from genscl_jax.models import model_builder

    notes = []
    width = models.stage_widths(config.width_multiplier)[0]
    if model_builder.resolve_stem(config.stem, config.image_size) == "cifar":
        notes.append(f"CIFAR stem (conv1 is 3x3 stride 1, no max-pool): in torchvision set model.conv1 = "
                     f"torch.nn.Conv2d({channels}, {width}, 3, 1, 1, bias=False) and model.maxpool = "
                     "torch.nn.Identity()")
    elif channels != 3:
        notes.append(f"{channels}-channel input: in torchvision set model.conv1 = torch.nn.Conv2d({channels}, {width}, "
                     "7, 2, 3, bias=False)")
    if config.width_multiplier != 1:
        notes.append(f"width_multiplier {config.width_multiplier}: torchvision's ResNets have fixed widths "
                     "(64..512 per stage), so no torchvision model has these shapes; the names still follow it")
    if config.model in ("resnet10", "resnet200"):
        stages = list(models.create_resnet(config.model).stage_sizes)
        block = "BasicBlock" if config.model == "resnet10" else "Bottleneck"
        notes.append(f"{config.model} is not in torchvision.models: build it as torchvision.models.resnet.ResNet("
                     f"torchvision.models.resnet.{block}, {stages})")
    return notes


def _write_bytes(output: str, data: bytes) -> None:
    from etils import epath

    target = epath.Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genscl_jax.export", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="workdir of a pretrain, supervised or pretrain_and_eval run")
    parser.add_argument("--output", required=True, help="FILE.safetensors, FILE.npz or a new directory (orbax)")
    parser.add_argument("--with-head", action="store_true", help="also the projection head / classifier")
    parser.add_argument("--verbose", action="store_true", help="also the libraries' warnings (orbax's read-only notes)")
    args = parser.parse_args(argv)
    if args.verbose:
        from genscl_jax.runtime import console

        console.configure(verbose=True)
    try:
        notes = export(args.workdir, args.output, with_head=args.with_head)
    except ExportError as e:
        print(f"export error: {e}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {args.output} ({'encoder and head' if args.with_head else 'encoder'} of {args.workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
