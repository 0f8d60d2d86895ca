"""What a training step feeds its networks: the batch's uint8 views augmented (when the device augments),
normalised and mixed, and their label distributions, for the whole batch at once or one strided micro-batch at a
time.

The dense step prepares the whole batch once (`StepInputs.rows(None)`), as it always has. A micro-batched step
never holds the whole batch's prepared views: every network's pass over micro-batch k (teacher, EMA key encoder,
student and the student's recomputation in the backward pass) prepares micro-batch k from the uint8 batch when it
needs it (`rows(k)`). The prepared batch is the largest buffer that would otherwise grow with the batch: at the
ImageNet recipe 1.2 MB per two-view source image in float32 against 0.3 MB of uint8 (BENCHMARKS.md section 9).

Both ways compute the same rows. Micro-batch k holds source images k, k + K, k + 2K, ... (training/micro_batches.py).
View v of image i is mixed with view v of image (i + s) mod B (objectives/mixing.py, s = partner_shift(B, v)): for
micro-batch k those partners are micro-batch (k + s) mod K's images, moved by (k + s) // K places, so they are
found in the uint8 batch and prepared with their own augmentation keys, exactly as in the whole batch. The
randomness is drawn once per step for the whole batch (one key per view, a few scalars per view for mixing).

The mixed views are constrained to stay sharded by examples (`layout.sharded`): with MoCo on, XLA:GPU otherwise
resolved the Mixup-or-CutMix `lax.cond` by gathering its mixed images onto every GPU, a micro-batch's (4 x 147 MiB
per step at the ImageNet recipe on 8 x H100) or, in the dense step, the whole batch's, and then ran the networks on
them replicated (BENCHMARKS.md section 11.2). The partners are rolled per device (`layout.rolled`): a jnp.roll of
the sharded batch was resharded by all-to-all on GPUs.

JAX only: the bench builds the steps that use it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from genscl_jax.data import device_augment, device_preprocess
from genscl_jax.objectives import mixing
from genscl_jax.runtime.parallel import ONE_DEVICE, ExampleLayout
from genscl_jax.training.micro_batches import MicroBatches, RowsOrBuilder


@dataclasses.dataclass(frozen=True)
class MixSettings:
    """Mixup / CutMix of the views: `kind` (objectives/mixing.py), Beta(alpha, alpha) mixing ratios, and the chance
    `prob` that a view is mixed at all (1: every view, as in the paper)."""
    kind: str = "none"
    alpha: float = 1.0
    prob: float = 1.0

    @classmethod
    def from_config(cls, config: Any) -> MixSettings:
        """config.mix's settings (a step_settings source)."""
        return cls(config.mix.kind, config.mix.alpha, config.mix.prob)


@dataclasses.dataclass(frozen=True)
class StepInputs:
    """One step's batch before preparation, with the randomness that prepares it."""
    views: jax.Array  # uint8 [B, V, H, W, C]
    view_keys: jax.Array  # each view's augmentation key (device_augment.image_keys, as train_views draws), [B, V, ...]
    mixes: list  # per view: mixing.draw_mix's scalars, or None
    preprocessing: device_preprocess.Preprocessing
    mix_kind: str
    micro: MicroBatches
    # How the images stay sharded by examples and how their partners are rolled (the default: one device).
    layout: ExampleLayout = ONE_DEVICE

    def rows(self, k: jax.Array | int | None) -> jax.Array:
        """The network input [rows, H, W, C] (float32), batch-major (the views of an image adjacent): the whole
        batch for k None, else micro-batch k's rows in micro_batches.split's order."""
        if k is None:  # the dense step: prepare every view once, mix with the prepared views rolled
            prepared = device_preprocess.train_views_with_keys(self.view_keys, self.views, self.preprocessing)
            views = self.layout.sharded(mixing.mix_view_images(prepared, self.mixes, self.mix_kind, self.layout.rolled))
        else:  # one micro-batch: its views and its partners' views, prepared from the uint8 batch
            keys, views = self._take(self.view_keys, k), self._take(self.views, k)
            prepared = device_preprocess.train_views_with_keys(keys, views, self.preprocessing)
            mixed = []
            for v, mix in enumerate(self.mixes):
                partner = None
                if mix is not None:
                    partner = device_preprocess.train_views_with_keys(
                        self._micro_partners(self.view_keys[:, v], k, v),
                        self._micro_partners(self.views[:, v], k, v), self.preprocessing)
                mixed.append(self.layout.sharded(mixing.mix_images(prepared[:, v], partner, mix, self.mix_kind)))
            views = jnp.stack(mixed, axis=1)
        return views.reshape((-1,) + views.shape[2:])

    def _shift(self, view: int) -> int:
        return mixing.partner_shift(self.views.shape[0], view)

    def _take(self, x: jax.Array, k) -> jax.Array:
        """Micro-batch k's images of x [B, ...]: rows k, k + K, ... A reshape and an index on an unsharded axis, so
        each device takes rows of its own shard and nothing moves."""
        num = self.micro.num
        x = x.reshape((x.shape[0] // num, num) + x.shape[1:])
        return jax.lax.dynamic_index_in_dim(x, k, axis=1, keepdims=False)

    def _micro_partners(self, x: jax.Array, k, view: int) -> jax.Array:
        """The partners (view `view`'s shift) of micro-batch k's images, from x [B, ...]: micro-batch (k + s) mod K,
        moved by (k + s) // K places, which is s // K or one more (two static rolls, a permute of one image per
        device each, not a gather)."""
        num, shift = self.micro.num, self._shift(view)
        source = self._take(x, (k + shift) % num)
        low = shift // num
        wrapped = (k + shift) // num > low
        return jnp.where(wrapped, self.layout.rolled(source, low + 1), self.layout.rolled(source, low))


def inputs_and_labels(aug_key: jax.Array, mix_key: jax.Array, batch: dict[str, jax.Array], num_classes: int, *,
                      preprocessing: device_preprocess.Preprocessing, mix: MixSettings,
                      micro: MicroBatches, layout: ExampleLayout = ONE_DEVICE,
                      ) -> tuple[StepInputs, jax.Array]:
    """The batch's StepInputs and its label distributions [B * V, num_classes] (batch-major), which need no image.
    `layout`: StepInputs.layout, how the images stay sharded by examples (parallel.ExampleLayout(mesh))."""
    views = batch["image"]
    batch_size, num_views, height, width = views.shape[:4]
    mixes = mixing.draw_view_mixes(mix_key, num_views, kind=mix.kind, alpha=mix.alpha, prob=mix.prob,
                                   height=height, width=width)
    inputs = StepInputs(views=views, view_keys=device_augment.image_keys(aug_key, (batch_size, num_views)),
                        mixes=mixes, preprocessing=preprocessing, mix_kind=mix.kind, micro=micro,
                        layout=layout)
    labels = mixing.view_labels(mixes, batch["label"], num_classes, mix.kind)
    return inputs, labels.reshape(batch_size * num_views, num_classes)


def rows_or_builder(inputs: StepInputs) -> RowsOrBuilder:
    """What MicroBatches' passes take: the prepared whole batch's rows (an array) for the dense step, else the
    builder `inputs.rows`, which each micro-batch's pass calls with its index."""
    return inputs.rows(None) if inputs.micro.num == 1 else inputs.rows
