"""Image mixing (Mixup, CutMix) that turns hard class ids into soft label distributions.

GenSCL compares label *distributions*, so mixing two images yields a label lam * onehot(a) +
(1 - lam) * onehot(b) and two views of one image are no longer necessarily full positives.

Partners. Image i is mixed with image (i + shift) mod B of the same batch, for a static shift, where the
authors' code draws `torch.randperm(B)`. On a batch sharded over devices, a random permutation needs every image
on every device (XLA all-gathers the global image batch, which grows with the global batch);
a static shift is a collective-permute of `shift` images per device (BENCHMARKS.md, "Collective audit"), and it
is the same function of the global batch on any number of devices. Each view uses its own shift (view v: 1 + v,
folded into [1, B - 1]) and its own lam, so the two views of an image have different partners.
Statistically this is randperm's pairing: the input pipeline shuffles, so the image at position i + shift is a
uniformly random other image, independent of image i, and every image is a partner exactly once per view, as in
a permutation. What differs is randperm's rare coincidences, which a shift rules out: an image drawn as its
own partner (an unmixed image; expected once per batch with randperm), two images that are each other's partner
(expected 1/2 pair), and an image with the same partner in both views (expected once); and the shifts tie the two
views' partners together (view 1's partner of image i is view 0's partner of view 0's partner). Measured against
independent permutations on the targets the loss sees (the row sum of label similarity and the target entropy),
the difference is tiny: BENCHMARKS.md, "Mixing partners", has the figures and the command.

Per call one lam ~ Beta(alpha, alpha) is shared by the whole batch (as in the authors' code). For CutMix, lam is
reset to the exact fraction of pixels kept from a, so labels match pixels. `mix_views` mixes each augmented view
independently (own key, partner shift and lam), as the paper does.

Everything is pure JAX with static shapes, so it runs under jit and on sharded batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MIX_KINDS = ("none", "mixup", "cutmix", "mixup_cutmix")


def one_hot_labels(class_ids: jax.Array, num_classes: int) -> jax.Array:
    """Class ids [...] -> float32 one-hot distributions [..., num_classes]."""
    return jax.nn.one_hot(class_ids, num_classes, dtype=jnp.float32)


def _check_kind(kind: str) -> None:
    if kind not in MIX_KINDS:
        raise ValueError(f"Unknown mixing kind {kind!r}; expected one of {MIX_KINDS}.")


def _sample_lam(key: jax.Array, alpha: float) -> jax.Array:
    """lam ~ Beta(alpha, alpha), a float32 scalar."""
    if isinstance(alpha, (int, float)) and alpha == 1.0:
        # Beta(1, 1) is exactly U(0, 1); the gamma rejection sampler behind jax.random.beta is a while
        # loop that costs seconds of compile time per jit for no difference in distribution.
        return jax.random.uniform(key, (), jnp.float32)
    return jax.random.beta(key, alpha, alpha, dtype=jnp.float32)


def partner_shift(batch_size: int, view: int = 0) -> int:
    """The static partner offset of `view`: 1 + view, folded into [1, batch_size - 1] (never the image itself)."""
    if batch_size < 2:
        return 0  # a batch of one has no partner: the image is mixed with itself, i.e. unchanged
    return 1 + view % (batch_size - 1)


def partners(x: jax.Array, shift: int) -> jax.Array:
    """Row i of the result is row (i + shift) mod B of x: on a sharded batch, a collective-permute, not a gather."""
    return jnp.roll(x, -shift, axis=0)


def _mix_labels(onehot: jax.Array, partner_onehot: jax.Array, lam: jax.Array) -> jax.Array:
    return lam * onehot + (1.0 - lam) * partner_onehot


def _mixup(images, partner_images, onehot, partner_onehot, lam, box_key):
    del box_key  # Same signature as _cutmix so the two can be branches of lax.cond.
    # Blend in (at least) float32 so bfloat16 inputs don't round twice; cast back to keep the caller's dtype.
    compute = jnp.promote_types(images.dtype, jnp.float32)
    x, other = images.astype(compute), partner_images.astype(compute)
    mixed = lam.astype(compute) * x + (1.0 - lam.astype(compute)) * other
    return mixed.astype(images.dtype), _mix_labels(onehot, partner_onehot, lam)


def _cutmix_box(key: jax.Array, height: int, width: int, lam: jax.Array):
    """Integer box [y1, y2) x [x1, x2) with side ratio sqrt(1 - lam), uniform centre, clipped to the image."""
    ratio = jnp.sqrt(1.0 - lam)
    cut_h = jnp.floor(height * ratio).astype(jnp.int32)
    cut_w = jnp.floor(width * ratio).astype(jnp.int32)
    key_y, key_x = jax.random.split(key)
    cy = jax.random.randint(key_y, (), 0, height)
    cx = jax.random.randint(key_x, (), 0, width)
    y1 = jnp.clip(cy - cut_h // 2, 0, height)
    y2 = jnp.clip(cy - cut_h // 2 + cut_h, 0, height)
    x1 = jnp.clip(cx - cut_w // 2, 0, width)
    x2 = jnp.clip(cx - cut_w // 2 + cut_w, 0, width)
    return y1, y2, x1, x2


def _cutmix(images, partner_images, onehot, partner_onehot, lam, box_key):
    _, height, width, _ = images.shape
    y1, y2, x1, x2 = _cutmix_box(box_key, height, width, lam)
    # iota comparisons instead of dynamic slicing: the box size is data-dependent but the mask shape isn't.
    rows = jax.lax.broadcasted_iota(jnp.int32, (height, width), 0)
    cols = jax.lax.broadcasted_iota(jnp.int32, (height, width), 1)
    in_box = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
    mixed = jnp.where(in_box[None, :, :, None], partner_images, images)
    # Clipping at the border shrinks the box, so the labels use the area actually pasted, not 1 - lam.
    box_area = ((y2 - y1) * (x2 - x1)).astype(jnp.float32)
    kept = 1.0 - box_area / (height * width)
    return mixed, _mix_labels(onehot, partner_onehot, kept)


def mix_batch(rng, images, class_ids, num_classes: int, *, kind: str, alpha: float = 1.0, shift: int | None = None,
              prob: float = 1.0):
    """Mix a batch [B, H, W, C] with itself shifted: image i with image (i + shift) mod B (module docstring).

    With probability 1 - `prob` the batch is returned unmixed, with one-hot labels (one coin for the whole batch).
    Returns (mixed images [B, H, W, C] in the input dtype, float32 label distributions [B, num_classes]).
    `kind`, `num_classes`, `alpha`, `shift` (default: partner_shift(B)) and `prob` must be static under jit.
    """
    _check_kind(kind)
    onehot = one_hot_labels(class_ids, num_classes)
    if kind == "none" or prob <= 0:
        return images, onehot
    shift = partner_shift(images.shape[0]) if shift is None else shift
    if prob >= 1:  # no coin: the keys, and so the result, are exactly those of a mix that always happens
        return _mix(rng, images, onehot, kind, alpha, shift)
    coin_key, rng = jax.random.split(rng)
    mixed, labels = _mix(rng, images, onehot, kind, alpha, shift)
    # Both outcomes are computed and the coin selects one: static shapes, no data-dependent control flow.
    mixed_at_all = jax.random.bernoulli(coin_key, prob)
    return jnp.where(mixed_at_all, mixed, images), jnp.where(mixed_at_all, labels, onehot)


def _mix(rng, images, onehot, kind: str, alpha: float, shift: int):
    lam_key, box_key, choice_key = jax.random.split(rng, 3)
    lam = _sample_lam(lam_key, alpha)
    args = (images, partners(images, shift), onehot, partners(onehot, shift), lam, box_key)
    if kind == "mixup":
        return _mixup(*args)
    if kind == "cutmix":
        return _cutmix(*args)
    # mixup_cutmix: one fair coin per call picks the method for the whole batch.
    use_cutmix = jax.random.bernoulli(choice_key, 0.5)
    return jax.lax.cond(use_cutmix, _cutmix, _mixup, *args)


def mix_views(rng, views, class_ids, num_classes: int, *, kind: str, alpha: float = 1.0, prob: float = 1.0):
    """Mix each of V views [B, V, H, W, C] independently (own key, partner shift, lam and, if `prob` < 1, own coin
    for whether the view is mixed at all).

    The batch axis stays first because it is the sharded one. Returns (mixed views [B, V, H, W, C],
    float32 labels [B, V, num_classes]); view v uses key jax.random.split(rng, V)[v] and partner_shift(B, v).
    """
    _check_kind(kind)
    batch_size, num_views = views.shape[:2]
    keys = jax.random.split(rng, num_views)
    # A Python loop, not vmap: each view's shift is a different static roll.
    mixed = [mix_batch(keys[v], views[:, v], class_ids, num_classes, kind=kind, alpha=alpha,
                       shift=partner_shift(batch_size, v), prob=prob) for v in range(num_views)]
    return jnp.stack([m[0] for m in mixed], axis=1), jnp.stack([m[1] for m in mixed], axis=1)
