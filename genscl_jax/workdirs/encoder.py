"""What `genscl_jax.load_encoder` returns: a trained encoder with its input contract, and `features(images)`, which
takes pixels and normalises them exactly as the training run did.

Pixels, unambiguously: uint8 arrays are 0-255; float arrays are [0, 1] unless `pixel_max=255` says [0, 255] (a
float array with values above 1 and no pixel_max is an error, not a guess). `module.apply` itself takes the
normalised float input only; it refuses integer pixels (models/resnet.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genscl_jax.workdirs import input_contract


class ContractError(ValueError):
    """Images that do not fit the encoder's input contract, or a workdir that recorded none; one line."""


@dataclasses.dataclass(frozen=True)
class Encoder:
    module: nn.Module  # a models.ResNet with num_classes=None, float32: normalised NHWC images -> [B, F]
    variables: dict[str, Any]  # {"params", "batch_stats"}
    contract: input_contract.InputContract | None  # None: a workdir from before contracts were recorded
    workdir: str
    step: int
    _compiled: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # pixel scale -> jitted

    def __iter__(self) -> Iterator[Any]:
        """`module, variables = load_encoder(workdir)`, as before the contract was added."""
        return iter((self.module, self.variables))

    def features(self, images: Any, *, pixel_max: float | None = None) -> np.ndarray:
        """Pooled features [B, feature_dim] (float32 NumPy) of NHWC `images` with the contract's channel count:
        uint8 pixels (0-255), or float pixels in [0, 1] (default) or [0, pixel_max] (pixel_max=255)."""
        contract = self.require_contract()
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != contract.channels:
            raise ContractError(f"images {images.shape}: the encoder of {self.workdir} takes NHWC batches with "
                                f"{contract.channels} channel(s) (trained at {contract.image_size}x"
                                f"{contract.image_size}x{contract.channels})")
        return np.asarray(self._normalised_features(_pixel_scale(images, pixel_max))(images))

    def require_contract(self) -> input_contract.InputContract:
        if self.contract is None:
            raise ContractError(
                f"{self.workdir} has no {input_contract.CONTRACT_FILE}: it was trained before runs recorded their "
                "input contract, so the mean and std its images were normalised with are unknown here; rerun its "
                "training command once (a finished run trains nothing more and records it)")
        return self.contract

    def _normalised_features(self, scale: float):
        """pixels -> features, jitted once per pixel scale (and by jax.jit once per shape and dtype)."""
        if scale in self._compiled:
            return self._compiled[scale]
        mean = jnp.asarray(self.contract.mean, jnp.float32)
        std = jnp.asarray(self.contract.std, jnp.float32)
        variables = self.variables

        @jax.jit
        def apply(images):
            normalised = (images.astype(jnp.float32) / scale - mean) / std
            return self.module.apply(variables, normalised, train=False)

        self._compiled[scale] = apply
        return apply


def _pixel_scale(images: np.ndarray, pixel_max: float | None) -> float:
    """What the pixels are divided by to reach [0, 1]: 255 for uint8, 1 or pixel_max for floats."""
    if images.dtype == np.uint8:
        if pixel_max not in (None, 255):
            raise ContractError(f"uint8 images are 0-255; pixel_max={pixel_max} applies to float images only")
        return 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise ContractError(f"images of dtype {images.dtype}: give uint8 pixels (0-255) or float pixels in [0, 1] "
                            "(or [0, 255] with pixel_max=255)")
    if pixel_max is None:
        top = float(images.max()) if images.size else 0.0
        if top > 1.0 + 1e-6:
            raise ContractError(f"float images with values up to {top:g}: float pixels are read as [0, 1]; pass "
                                "pixel_max=255 for [0, 255] floats, or give uint8")
        return 1.0
    if pixel_max not in (1, 255):
        raise ContractError(f"pixel_max={pixel_max}: float pixels are in [0, 1] (pixel_max=1) or [0, 255] "
                            "(pixel_max=255)")
    return float(pixel_max)
