"""<workdir>/input_contract.json: what a trained encoder expects as input, so its features are right elsewhere.

The network was trained on float32 NHWC images normalised as (pixels / 255 - mean) / std per channel, pixels
being uint8 on the 0-255 scale; mean and std come from the dataset (its registry entry, an image folder's measured
statistics, or config.data_mean / data_std), not from the config file, so a workdir must record them. runner writes
this file when a run starts (after the data is resolved); summary.json repeats it, export writes it into every
file it makes (.safetensors metadata, an .npz entry, a file in the orbax folder), and load_encoder's features()
normalises with it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from genscl_jax import models
from genscl_jax.models import model_builder
from genscl_jax.runtime import paths

CONTRACT_FILE = "input_contract.json"
METADATA_KEY = "genscl_jax.input_contract"  # in .safetensors metadata and as an .npz entry
PIXEL_RANGE = "uint8 pixels 0-255 (features() also takes float pixels in [0, 1], or [0, 255] with pixel_max=255)"
NORMALIZATION = "(pixels / 255 - mean) / std per channel, then float32 NHWC into the network"


@dataclasses.dataclass(frozen=True)
class InputContract:
    channels: int
    image_size: int  # the side the network was trained at (it pools globally, so other sizes run too)
    mean: tuple[float, ...]  # per channel, on the 0-1 pixel scale
    std: tuple[float, ...]
    feature_dim: int  # the width of the pooled features the encoder returns
    model: dict[str, Any]  # the architecture: model, stem (resolved), width_multiplier
    layout: str = "NHWC"
    dtype: str = "float32"  # of the normalised network input and of the parameters
    pixel_range: str = PIXEL_RANGE
    normalization: str = NORMALIZATION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, recorded: dict[str, Any]) -> InputContract:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in recorded.items() if k in fields}
        return cls(**{**values, "mean": tuple(values["mean"]), "std": tuple(values["std"])})

    def torchvision_transform(self) -> str:
        """The torchvision preprocessing that gives the network's input from PIL images or HWC uint8 arrays."""
        mean = ", ".join(f"{m:.6g}" for m in self.mean)
        std = ", ".join(f"{s:.6g}" for s in self.std)
        return (f"transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=[{mean}], std=[{std}])])")


def of_run(config: Any, channels: int, mean: tuple[float, ...], std: tuple[float, ...]) -> InputContract:
    """The contract of a run of `config` on data read with `channels` channels and these statistics."""
    return InputContract(
        channels=int(channels), image_size=int(config.image_size), mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std), feature_dim=models.feature_dim(config.model, config.width_multiplier),
        model={"model": config.model, "stem": model_builder.resolve_stem(config.stem, config.image_size),
               "width_multiplier": float(config.width_multiplier)})


def write(workdir: str, contract: InputContract) -> str:
    """Writes <workdir>/input_contract.json (local or gs://); returns its path. Callers write on process 0 only."""
    path = paths.join(workdir, CONTRACT_FILE)
    paths.write_text(path, json.dumps(contract.to_dict(), indent=2, sort_keys=True))
    return path


def read(workdir: str) -> InputContract | None:
    """The contract recorded in `workdir`, or None for a workdir written before contracts were recorded."""
    path = paths.join(workdir, CONTRACT_FILE)
    if not paths.exists(path):
        return None
    return InputContract.from_dict(json.loads(paths.read_text(path)))
