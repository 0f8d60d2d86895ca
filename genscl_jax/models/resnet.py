"""ResNet v1.5 encoders in Flax Linen, laid out like torchvision so its weights convert one-to-one.

v1.5 means the stride of a bottleneck block sits on its 3x3 conv (torchvision, not the original paper's 1x1).
Paddings are explicit and equal to torchvision's (Flax's "SAME" pads stride-2 convs asymmetrically, which would
shift every feature map by one pixel relative to PyTorch).

Inputs are NHWC. Parameter / variable naming and the torchvision key each name maps from:

  torchvision                      Flax (collection "params" unless noted)
  conv1.weight [O,I,H,W]           conv_init/kernel [H,W,I,O]
  bn1.{weight,bias}                bn_init/{scale,bias}
  bn1.{running_mean,running_var}   batch_stats: bn_init/{mean,var}
  layer{s}.{b}.conv{k}.weight      stage{s}_block{b}/conv{k}/kernel      (s = 1..4, b = 0.., k = 1..3)
  layer{s}.{b}.bn{k}.*             stage{s}_block{b}/bn{k}/...           (same BN mapping as bn1)
  layer{s}.{b}.downsample.0.weight stage{s}_block{b}/proj_conv/kernel
  layer{s}.{b}.downsample.1.*      stage{s}_block{b}/proj_bn/...
  fc.weight [out,in], fc.bias      fc/kernel [in,out], fc/bias           (only when num_classes is set)

BasicBlock has conv1/bn1/conv2/bn2, BottleneckBlock conv1..conv3/bn1..bn3; proj_* exist only in blocks whose
input shape differs from their output shape (the first block of a stage, as in torchvision). BatchNorm momentum
0.9 in Flax is torchvision's momentum 0.1 (Flax weights the old running value, PyTorch the new batch value).

Known differences from torchvision that do not affect converted weights or evaluation: Flax updates the running
variance with the biased batch variance (PyTorch: unbiased), and the fc bias starts at zero (PyTorch: uniform).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from genscl_jax.models.batch_norm import BatchNormGroups, GhostBatchNorm
from genscl_jax.models.convolution import canonical_gradient_conv

# torchvision initialises convs with kaiming_normal_(mode="fan_out", nonlinearity="relu"), untruncated.
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Linear's default kernel init, kaiming_uniform(a=sqrt(5)), is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
TORCH_LINEAR_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

_BASE_WIDTH = 64


def _conv(features: int, kernel: int, strides: int, dtype: Any, name: str, canonical_gradients: bool = False
          ) -> nn.Conv:
    """A bias-free conv with torchvision's padding (kernel // 2 on every side); canonical_gradients: its gradient
    convolutions canonical (convolution.py, for XLA:CPU inside loops)."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(strides, strides),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=_CONV_INIT,
        conv_general_dilated=canonical_gradient_conv if canonical_gradients else None,
        name=name,
    )


def _bn(train: bool, dtype: Any, name: str, zero_scale: bool = False,
        groups: BatchNormGroups | None = None) -> nn.BatchNorm:
    """torchvision's BatchNorm; with `groups`, train-mode statistics per group of the batch (batch_norm.py)."""
    norm = functools.partial(GhostBatchNorm, groups=groups) if groups else nn.BatchNorm
    return norm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
        name=name,
    )


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """torchvision's MaxPool2d(3, stride=2, padding=1): padded cells are -inf, so they never win."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). `filters` is the output width (expansion 1)."""

    filters: int
    strides: int = 1
    dtype: Any = jnp.float32
    zero_init_last_bn: bool = False
    bn_groups: BatchNormGroups | None = None
    canonical_conv_gradients: bool = False

    expansion: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        groups, canonical = self.bn_groups, self.canonical_conv_gradients
        y = _conv(self.filters, 3, self.strides, self.dtype, "conv1", canonical)(x)
        y = nn.relu(_bn(train, self.dtype, "bn1", groups=groups)(y))
        y = _conv(self.filters, 3, 1, self.dtype, "conv2", canonical)(y)
        y = _bn(train, self.dtype, "bn2", zero_scale=self.zero_init_last_bn, groups=groups)(y)
        return nn.relu(y + _shortcut(x, self.filters, self.strides, train, self.dtype, groups, canonical))


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (strided, v1.5) -> 1x1 convs (ResNet-50+). Output width is 4 * `filters`."""

    filters: int
    strides: int = 1
    dtype: Any = jnp.float32
    zero_init_last_bn: bool = False
    bn_groups: BatchNormGroups | None = None
    canonical_conv_gradients: bool = False

    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_features, groups, canonical = self.filters * self.expansion, self.bn_groups, self.canonical_conv_gradients
        y = _conv(self.filters, 1, 1, self.dtype, "conv1", canonical)(x)
        y = nn.relu(_bn(train, self.dtype, "bn1", groups=groups)(y))
        y = _conv(self.filters, 3, self.strides, self.dtype, "conv2", canonical)(y)
        y = nn.relu(_bn(train, self.dtype, "bn2", groups=groups)(y))
        y = _conv(out_features, 1, 1, self.dtype, "conv3", canonical)(y)
        y = _bn(train, self.dtype, "bn3", zero_scale=self.zero_init_last_bn, groups=groups)(y)
        return nn.relu(y + _shortcut(x, out_features, self.strides, train, self.dtype, groups, canonical))


def _shortcut(x: jax.Array, features: int, strides: int, train: bool, dtype: Any,
              groups: BatchNormGroups | None, canonical_gradients: bool) -> jax.Array:
    """Identity, or torchvision's `downsample` (1x1 strided conv + BN) when the shape changes.

    Called from inside a block's compact __call__, so proj_conv / proj_bn are that block's children.
    """
    if strides == 1 and x.shape[-1] == features:
        return x
    y = _conv(features, 1, strides, dtype, "proj_conv", canonical_gradients)(x)
    return _bn(train, dtype, "proj_bn", groups=groups)(y)


def stage_widths(width_multiplier: float = 1) -> tuple[int, ...]:
    """Per-stage `filters` (64, 128, 256, 512 times the multiplier); the stem conv uses the first one."""
    base = int(round(_BASE_WIDTH * width_multiplier))
    if base < 1:
        raise ValueError(f"width_multiplier={width_multiplier} gives a base width below 1")
    return tuple(base * 2**i for i in range(4))


class ResNet(nn.Module):
    """ResNet encoder (see the module docstring for the parameter naming).

    stem: "cifar" = 3x3 stride-1 conv, no max-pool (32 px inputs); "imagenet" = 7x7 stride-2 conv + max-pool.
    num_classes: None -> __call__ returns pooled features [B, F]; an int -> adds Dense "fc", returns logits.
    dtype: compute dtype of convs and BatchNorm; parameters stay float32 and outputs are float32.
    bn_groups: train-mode BatchNorm statistics per group of the batch (ghost BatchNorm, batch_norm.py); None: over
      the whole batch. Evaluation and the variables are the same either way.
    remat: "blocks" recomputes each residual block's activations in the backward pass instead of keeping them
      (nn.remat): the backward keeps only the blocks' inputs, for one more forward pass of compute.
    canonical_conv_gradients: gradient convolutions XLA:CPU can run in Eigen inside loop bodies (convolution.py;
      a micro-batched step on CPU). Same values.
    """

    stage_sizes: Sequence[int]
    block_cls: type[BasicBlock] | type[BottleneckBlock]
    width_multiplier: float = 1
    stem: str = "imagenet"
    num_classes: int | None = None
    dtype: Any = jnp.float32
    zero_init_last_bn: bool = False
    bn_groups: BatchNormGroups | None = None
    remat: str = "none"
    canonical_conv_gradients: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        widths = stage_widths(self.width_multiplier)
        if not 1 <= len(self.stage_sizes) <= len(widths):
            raise ValueError(f"stage_sizes must have 1 to {len(widths)} entries, got {self.stage_sizes}")
        if self.remat not in REMAT:
            raise ValueError(f"unknown remat {self.remat!r}; expected one of {REMAT}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            # Pixels straight from a file would give features silently wrong: the network was trained on
            # normalised float images, (pixels / 255 - mean) / std per channel.
            raise ValueError(f"the ResNet got {x.dtype} images {tuple(x.shape)}: it takes float images normalised "
                             "as in training ((pixels / 255 - mean) / std); use genscl_jax.load_encoder(workdir)"
                             ".features(images), which takes uint8 pixels and normalises them as the run did")
        # static_argnums counts self: `train` (argument 2) selects Python control flow, so it must stay static.
        block_cls = nn.remat(self.block_cls, static_argnums=(2,)) if self.remat == "blocks" else self.block_cls
        x = self._stem(x.astype(self.dtype), widths[0], train)
        for s, num_blocks in enumerate(self.stage_sizes):
            for b in range(num_blocks):
                # As in torchvision, only the first block of stages 2-4 downsamples.
                strides = 2 if s > 0 and b == 0 else 1
                x = block_cls(
                    filters=widths[s],
                    strides=strides,
                    dtype=self.dtype,
                    zero_init_last_bn=self.zero_init_last_bn,
                    bn_groups=self.bn_groups,
                    canonical_conv_gradients=self.canonical_conv_gradients,
                    name=f"stage{s + 1}_block{b}",
                )(x, train)
        # Pool in float32 so bfloat16 models still give exact-enough features to the loss.
        features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        if self.num_classes is None:
            return features
        # The classifier is tiny; keeping it in float32 avoids rounding the logits.
        fc = nn.Dense(self.num_classes, dtype=jnp.float32, kernel_init=TORCH_LINEAR_KERNEL_INIT, name="fc")
        return fc(features)

    def _stem(self, x: jax.Array, width: int, train: bool) -> jax.Array:
        if self.stem == "cifar":
            x = _conv(width, 3, 1, self.dtype, "conv_init", self.canonical_conv_gradients)(x)
            return nn.relu(_bn(train, self.dtype, "bn_init", groups=self.bn_groups)(x))
        if self.stem == "imagenet":
            x = _conv(width, 7, 2, self.dtype, "conv_init", self.canonical_conv_gradients)(x)
            x = nn.relu(_bn(train, self.dtype, "bn_init", groups=self.bn_groups)(x))
            return max_pool_3x3_s2(x)
        raise ValueError(f"unknown stem {self.stem!r}; expected one of {STEMS}")


STEMS = ("cifar", "imagenet")  # the input layers _stem implements
REMAT = ("none", "blocks")  # what ResNet.remat recomputes in the backward pass: nothing, or each residual block


_ARCHS: dict[str, tuple[tuple[int, ...], type[nn.Module]]] = {
    # ResNet-10 (one basic block per stage, as timm's resnet10t): the smallest member, for tests and quick runs.
    "resnet10": ((1, 1, 1, 1), BasicBlock),
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), BottleneckBlock),
    "resnet101": ((3, 4, 23, 3), BottleneckBlock),
    "resnet152": ((3, 8, 36, 3), BottleneckBlock),
    "resnet200": ((3, 24, 36, 3), BottleneckBlock),
}

MODEL_NAMES: tuple[str, ...] = tuple(_ARCHS)


def _arch(name: str) -> tuple[tuple[int, ...], type[nn.Module]]:
    if name not in _ARCHS:
        raise ValueError(f"unknown model name {name!r}; allowed names: {', '.join(MODEL_NAMES)}")
    return _ARCHS[name]


def create_resnet(name: str, **kwargs: Any) -> ResNet:
    """ResNet by name ("resnet18", ..., "resnet200"); kwargs are the other ResNet fields."""
    stage_sizes, block_cls = _arch(name)
    return ResNet(stage_sizes=stage_sizes, block_cls=block_cls, **kwargs)


def feature_dim(name: str, width_multiplier: float = 1) -> int:
    """Size of the pooled features of `name` (512 or 2048 at width 1)."""
    _, block_cls = _arch(name)
    return stage_widths(width_multiplier)[-1] * block_cls.expansion
