"""The generalized supervised contrastive loss (GenSCL) and its special cases.

GenSCL is a cross-entropy between two distributions per anchor i over its contrasts j:
  - the target: the cosine similarity s_ij of the label distributions y_i, y_j, row-normalised;
  - the prediction: the softmax of the latent similarities z_i . z_j / tau.

With one-hot labels s_ij is 1 for same-class pairs and 0 otherwise, so the loss is SupCon's (Khosla et al.
2020, "all views" mode, summation outside the log); with "each image is its own class" it is SimCLR's NT-Xent.

Everything is pure and computed in float32: bfloat16 logits at temperature 0.1 lose too much precision.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

NORMALIZATIONS = ("label_sum", "count")

# The authors' code adds this to the per-row sum of label similarities before dividing.
_LABEL_SUM_EPS = 1e-8


def label_similarity(labels: jax.Array, contrast_labels: jax.Array) -> jax.Array:
    """Cosine similarity of label distributions: [N, C] x [M, C] -> [N, M] float32.

    Integer class ids [N] x [M] are one-hot labels: the cosine of two one-hot rows is 1 for the same class, else 0,
    so no class count is needed. An all-zero label row (e.g. padding) has similarity 0 with everything, not NaN.
    """
    if _is_class_ids(labels) and _is_class_ids(contrast_labels):
        return (labels[:, None] == contrast_labels[None, :]).astype(jnp.float32)
    if _is_class_ids(labels) or _is_class_ids(contrast_labels):
        raise ValueError(f"labels {_shape_and_kind(labels)} and contrast_labels {_shape_and_kind(contrast_labels)}: "
                         "give both as integer class ids [N] or both as label distributions [N, C]")
    labels = unit_rows(labels.astype(jnp.float32))
    contrast_labels = unit_rows(contrast_labels.astype(jnp.float32))
    return jnp.matmul(labels, contrast_labels.T, precision=jax.lax.Precision.HIGHEST)


def _is_class_ids(labels: jax.Array) -> bool:
    return labels.ndim == 1 and jnp.issubdtype(labels.dtype, jnp.integer)


def _shape_and_kind(labels: jax.Array) -> str:
    return f"{tuple(labels.shape)} ({'class ids' if _is_class_ids(labels) else labels.dtype})"


def anchor_rows(features: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(features [N, D], labels [N] or [N, C]) from either the 2-D form or SupContrast's SupConLoss form:
    features [B, V, D] (V views of B images) with labels [B] or [B, C], flattened view-major (rows k*B..(k+1)*B-1
    are view k, as SupContrast's torch.cat(torch.unbind(features, 1))) with the labels repeated per view.
    ValueError naming both shapes when they do not fit together."""
    if features.ndim == 3:
        batch, views, dim = features.shape
        if labels.ndim not in (1, 2) or labels.shape[0] != batch:
            raise ValueError(f"features {tuple(features.shape)} are [batch, views, dim], so labels must be [batch] "
                             f"class ids or [batch, classes] distributions with batch={batch}; got labels "
                             f"{tuple(labels.shape)}")
        features = jnp.swapaxes(features, 0, 1).reshape(views * batch, dim)
        labels = jnp.concatenate([labels] * views, axis=0)
    if features.ndim != 2 or labels.ndim not in (1, 2) or labels.shape[0] != features.shape[0]:
        raise ValueError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not match: give "
                         "features [N, D] with labels [N] (class ids) or [N, C] (distributions), or features "
                         "[batch, views, D] with labels [batch] or [batch, C]")
    if labels.ndim == 1 and not _is_class_ids(labels):
        raise ValueError(f"labels {tuple(labels.shape)} of dtype {labels.dtype}: 1-D labels are class ids and must "
                         "be integers; give label distributions as [N, C]")
    return features, labels


def unit_rows(x: jax.Array) -> jax.Array:
    """Each row scaled to unit L2 norm (an all-zero row stays zero): label vectors before their cosine."""
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, 1e-12)


def check_normalization(normalization: str) -> None:
    """ValueError unless `normalization` is one of NORMALIZATIONS (shared by the dense and the blocked loss)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization={normalization!r} is not supported; use one of {NORMALIZATIONS}")


def contrastive_loss_from_similarity(
    features: jax.Array,
    contrast_features: jax.Array,
    similarity: jax.Array,
    *,
    exclude_self: bool,
    contrast_mask: jax.Array | None = None,
    temperature: float = 0.1,
    base_temperature: float = 0.07,
    normalization: str = "label_sum",
) -> jax.Array:
    """The loss given a precomputed target similarity matrix [N, M].

    `exclude_self` removes the diagonal (contrast i for anchor i) from numerator and denominator: the anchor
    itself when the contrasts are the anchors (N == M), or its own same-view EMA key when the first N contrasts
    are the anchors' keys (N <= M). `contrast_mask` [M] bool removes contrasts (e.g. queue slots not yet written)
    from both as well.
    """
    check_normalization(normalization)
    anchors = features.astype(jnp.float32)
    contrasts = contrast_features.astype(jnp.float32)
    similarity = similarity.astype(jnp.float32)
    num_anchors, num_contrasts = similarity.shape
    logits = jnp.matmul(anchors, contrasts.T, precision=jax.lax.Precision.HIGHEST) / temperature

    keep = jnp.ones_like(logits, dtype=bool)
    if exclude_self:
        keep = keep & ~jnp.eye(num_anchors, num_contrasts, dtype=bool)
    if contrast_mask is not None:
        keep = keep & contrast_mask[None, :]
    row_loss = row_losses(logits, similarity, keep, normalization)
    return (temperature / base_temperature) * jnp.mean(row_loss)


def row_losses(logits: jax.Array, similarity: jax.Array, keep: jax.Array, normalization: str) -> jax.Array:
    """Per-anchor GenSCL loss [N] from logits and label similarities [N, M]; `keep` False drops a pair.

    Shared by the dense loss and the blocked one (loss_chunked.py), which calls it on blocks of rows.
    """
    similarity = jnp.where(keep, similarity, 0.0)
    num_kept = jnp.sum(keep, axis=1)
    # Subtracting the row max (a constant per row, without gradient) keeps exp() finite and changes nothing.
    row_max = jax.lax.stop_gradient(jnp.max(jnp.where(keep, logits, -jnp.inf), axis=1, keepdims=True))
    shifted = logits - row_max
    log_denominator = jnp.log(jnp.sum(jnp.where(keep, jnp.exp(shifted), 0.0), axis=1, keepdims=True))
    # where() rather than a product so excluded pairs (the diagonal) never form 0 * (-inf).
    log_prob = jnp.where(keep, shifted - log_denominator, 0.0)
    weighted = jnp.sum(similarity * log_prob, axis=1)
    if normalization == "label_sum":
        return -weighted / (jnp.sum(similarity, axis=1) + _LABEL_SUM_EPS)
    return -weighted / jnp.maximum(num_kept, 1)


def generalized_supcon_loss(
    features: jax.Array,
    labels: jax.Array,
    *,
    contrast_features: jax.Array | None = None,
    contrast_labels: jax.Array | None = None,
    contrast_mask: jax.Array | None = None,
    exclude_self: bool | None = None,
    temperature: float = 0.1,
    base_temperature: float = 0.07,
    normalization: str = "label_sum",
) -> jax.Array:
    """GenSCL loss. Returns a float32 scalar.

    Args:
      features: [N, D] L2-normalised anchors, all views concatenated; or SupContrast's form [B, V, D] (V views of
        B images), the same loss as its view-major [V * B, D] flattening with the labels repeated per view.
      labels: [N, C] label distributions of the anchors (one-hot, mixed, or a teacher's softmax), or integer
        class ids [N] (one-hot); [B] or [B, C] with 3-D features.
      contrast_features: [M, D] contrasts (e.g. EMA keys + queue). Default: the anchors themselves, all-vs-all
        with each anchor's own pair excluded.
      contrast_labels: [M, C] label distributions (or [M] class ids, as labels) of the contrasts; required with
        contrast_features.
      contrast_mask: optional [M] bool; False drops that contrast entirely (e.g. an empty queue slot).
      exclude_self: drop contrast i for anchor i. Default: True without contrast_features (the anchor itself),
        False with them. Pass True when the first N contrasts are the anchors' own counterparts, as MoCo's
        same-view EMA keys are: at step 0 such a key equals its query, so keeping it is SupCon's diagonal again.
      temperature: tau of the latent softmax.
      base_temperature: the loss is scaled by temperature / base_temperature, as in the authors' code.
      normalization: "label_sum" divides each row by the sum of its label similarities (the authors' code);
        "count" divides by the number of contrasts (the other reading of the paper).
    """
    features, labels = anchor_rows(features, labels)
    contrast_features, contrast_labels, exclude_self = resolve_contrasts(
        features, labels, contrast_features, contrast_labels, exclude_self)
    similarity = label_similarity(labels, contrast_labels)
    return contrastive_loss_from_similarity(
        features, contrast_features, similarity, exclude_self=exclude_self, contrast_mask=contrast_mask,
        temperature=temperature, base_temperature=base_temperature, normalization=normalization)


def resolve_contrasts(features, labels, contrast_features, contrast_labels, exclude_self):
    """(contrast_features, contrast_labels, exclude_self) with the defaults applied and the shapes checked."""
    if (contrast_features is None) != (contrast_labels is None):
        raise ValueError("contrast_features and contrast_labels must be given together")
    if contrast_features is None:
        if exclude_self is False:
            raise ValueError("exclude_self=False without contrast_features would contrast each anchor with itself")
        return features, labels, True
    if exclude_self and contrast_features.shape[0] < features.shape[0]:
        raise ValueError(f"exclude_self needs the first {features.shape[0]} contrasts to be the anchors' own; "
                         f"got only {contrast_features.shape[0]} contrasts")
    return contrast_features, contrast_labels, bool(exclude_self)


def soft_cross_entropy(logits: jax.Array, targets: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Mean cross-entropy against label distributions [N, C], smoothed towards uniform by `label_smoothing`: the
    supervised baseline's and the linear classifier's loss."""
    num_classes = logits.shape[-1]
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))


def supcon_loss(
    features: jax.Array,
    class_ids: jax.Array,
    *,
    contrast_features: jax.Array | None = None,
    contrast_class_ids: jax.Array | None = None,
    temperature: float = 0.1,
    base_temperature: float = 0.07,
) -> jax.Array:
    """SupCon (Khosla et al. 2020): GenSCL with one-hot labels, from integer class ids [N]."""
    if (contrast_features is None) != (contrast_class_ids is None):
        raise ValueError("contrast_features and contrast_class_ids must be given together")
    exclude_self = contrast_features is None
    if exclude_self:
        contrast_features, contrast_class_ids = features, class_ids
    same_class = (class_ids[:, None] == contrast_class_ids[None, :]).astype(jnp.float32)
    return contrastive_loss_from_similarity(
        features, contrast_features, same_class, exclude_self=exclude_self, temperature=temperature,
        base_temperature=base_temperature)


def simclr_loss(features: jax.Array, *, num_views: int = 2, temperature: float = 0.1,
                base_temperature: float = 0.07) -> jax.Array:
    """SimCLR's NT-Xent: the views of one source image are the only positives.

    `features` is [num_views * B, D] with the views concatenated view-major: rows k*B..(k+1)*B-1 are view k.
    """
    num_rows = features.shape[0]
    if num_rows % num_views:
        raise ValueError(f"features has {num_rows} rows, not a multiple of num_views={num_views}")
    image_ids = jnp.tile(jnp.arange(num_rows // num_views), num_views)
    return supcon_loss(features, image_ids, temperature=temperature, base_temperature=base_temperature)
