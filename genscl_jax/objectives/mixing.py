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


def _blend(images, partner_images, lam):
    # Blend in (at least) float32 so bfloat16 inputs don't round twice; cast back to keep the caller's dtype.
    compute = jnp.promote_types(images.dtype, jnp.float32)
    x, other = images.astype(compute), partner_images.astype(compute)
    return (lam.astype(compute) * x + (1.0 - lam.astype(compute)) * other).astype(images.dtype)


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


def _paste(images, partner_images, box):
    _, height, width, _ = images.shape
    y1, y2, x1, x2 = box
    # iota comparisons instead of dynamic slicing: the box size is data-dependent but the mask shape isn't.
    rows = jax.lax.broadcasted_iota(jnp.int32, (height, width), 0)
    cols = jax.lax.broadcasted_iota(jnp.int32, (height, width), 1)
    in_box = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
    return jnp.where(in_box[None, :, :, None], partner_images, images)


def draw_mix(rng, *, kind: str, alpha: float, prob: float, height: int, width: int) -> dict[str, jax.Array] | None:
    """One batch's mixing randomness (scalars shared by the batch): lam, CutMix's box and the share of pixels it
    keeps, the Mixup-or-CutMix coin and the coin for mixing at all (prob < 1). None: no mixing. The images are
    mixed with mix_images and the labels with mix_labels, for the whole batch at once or for any of its rows
    (a micro-batch) with their partners."""
    _check_kind(kind)
    if kind == "none" or prob <= 0:
        return None
    params = {}
    if prob < 1:  # without the coin, the keys are exactly those of a mix that always happens
        coin_key, rng = jax.random.split(rng)
        params["mixed_at_all"] = jax.random.bernoulli(coin_key, prob)
    lam_key, box_key, choice_key = jax.random.split(rng, 3)
    params["lam"] = _sample_lam(lam_key, alpha)
    if kind != "mixup":
        params["box"] = _cutmix_box(box_key, height, width, params["lam"])
        y1, y2, x1, x2 = params["box"]
        # Clipping at the border shrinks the box, so the labels use the area actually pasted, not 1 - lam.
        params["kept"] = 1.0 - ((y2 - y1) * (x2 - x1)).astype(jnp.float32) / (height * width)
    if kind == "mixup_cutmix":  # one fair coin per call picks the method for the whole batch
        params["use_cutmix"] = jax.random.bernoulli(choice_key, 0.5)
    return params


def mix_images(images, partner_images, params: dict[str, jax.Array] | None, kind: str) -> jax.Array:
    """Images [N, H, W, C] mixed with their partners' by draw_mix's `params`, in the input dtype."""
    if params is None:
        return images
    if kind == "mixup":
        mixed = _blend(images, partner_images, params["lam"])
    elif kind == "cutmix":
        mixed = _paste(images, partner_images, params["box"])
    else:  # a cond, not a select: only the chosen method's arithmetic runs
        mixed = jax.lax.cond(params["use_cutmix"], lambda: _paste(images, partner_images, params["box"]),
                             lambda: _blend(images, partner_images, params["lam"]))
    if "mixed_at_all" in params:  # both outcomes are computed and the coin selects one: static shapes
        mixed = jnp.where(params["mixed_at_all"], mixed, images)
    return mixed


def mix_labels(onehot, partner_onehot, params: dict[str, jax.Array] | None, kind: str) -> jax.Array:
    """Label distributions w * onehot + (1 - w) * partner, w the share of the image its own: lam for Mixup, the
    pixels kept for CutMix."""
    if params is None:
        return onehot
    weight = {"mixup": lambda: params["lam"], "cutmix": lambda: params["kept"],
              "mixup_cutmix": lambda: jnp.where(params["use_cutmix"], params["kept"], params["lam"])}[kind]()
    labels = weight * onehot + (1.0 - weight) * partner_onehot
    if "mixed_at_all" in params:
        labels = jnp.where(params["mixed_at_all"], labels, onehot)
    return labels


def mix_batch(rng, images, class_ids, num_classes: int, *, kind: str, alpha: float = 1.0, shift: int | None = None,
              prob: float = 1.0):
    """Mix a batch [B, H, W, C] with itself shifted: image i with image (i + shift) mod B (module docstring).

    With probability 1 - `prob` the batch is returned unmixed, with one-hot labels (one coin for the whole batch).
    Returns (mixed images [B, H, W, C] in the input dtype, float32 label distributions [B, num_classes]).
    `kind`, `num_classes`, `alpha`, `shift` (default: partner_shift(B)) and `prob` must be static under jit.
    """
    onehot = one_hot_labels(class_ids, num_classes)
    params = draw_mix(rng, kind=kind, alpha=alpha, prob=prob, height=images.shape[1], width=images.shape[2])
    if params is None:
        return images, onehot
    shift = partner_shift(images.shape[0]) if shift is None else shift
    return (mix_images(images, partners(images, shift), params, kind),
            mix_labels(onehot, partners(onehot, shift), params, kind))


def draw_view_mixes(rng, num_views: int, *, kind: str, alpha: float, prob: float, height: int,
                    width: int) -> list[dict[str, jax.Array] | None]:
    """draw_mix for each of `num_views` views: view v's from key jax.random.split(rng, num_views)[v]."""
    keys = jax.random.split(rng, num_views)
    return [draw_mix(keys[v], kind=kind, alpha=alpha, prob=prob, height=height, width=width)
            for v in range(num_views)]


def mix_views(rng, views, class_ids, num_classes: int, *, kind: str, alpha: float = 1.0, prob: float = 1.0):
    """Mix each of V views [B, V, H, W, C] independently (own key, partner shift, lam and, if `prob` < 1, own coin
    for whether the view is mixed at all).

    The batch axis stays first because it is the sharded one. Returns (mixed views [B, V, H, W, C],
    float32 labels [B, V, num_classes]); view v uses draw_view_mixes(rng, V)[v] and partner_shift(B, v).
    """
    mixes = draw_view_mixes(rng, views.shape[1], kind=kind, alpha=alpha, prob=prob, height=views.shape[2],
                            width=views.shape[3])
    return mix_view_images(views, mixes, kind), view_labels(mixes, class_ids, num_classes, kind)


def mix_view_images(views, mixes: list[dict[str, jax.Array] | None], kind: str, roll=partners) -> jax.Array:
    """The images of mix_views: views [B, V, H, W, C] mixed by `mixes` (draw_view_mixes), view v with view v of
    its partners at partner_shift(B, v). `roll(x, shift)`: what `partners` computes, laid out for a sharded batch
    (runtime/parallel.ExampleLayout.rolled)."""
    batch_size = views.shape[0]
    # A Python loop, not vmap: each view's shift is a different static roll.
    return jnp.stack([mix_images(views[:, v], roll(views[:, v], partner_shift(batch_size, v)), mix, kind)
                      for v, mix in enumerate(mixes)], axis=1)


def view_labels(mixes: list[dict[str, jax.Array] | None], class_ids, num_classes: int, kind: str) -> jax.Array:
    """The label distributions [B, V, num_classes] of views mixed by `mixes` (draw_view_mixes) with the partners
    of mix_views, from the batch's class ids [B]: no image is needed."""
    onehot = one_hot_labels(class_ids, num_classes)
    batch_size = onehot.shape[0]
    return jnp.stack([mix_labels(onehot, partners(onehot, partner_shift(batch_size, v)), mix, kind)
                      for v, mix in enumerate(mixes)], axis=1)
