"""GenSCL diagnostics: scalars the pretraining step computes from what it already has (projections, label
distributions, the contrast set, the key queue), that tell a learning run from a broken one. Pure; no gradient.

Per label source (the ground truth after mixing, and the teacher's labels with distillation), over the loss's own
contrast set (self and masked contrasts excluded, as in the loss):
- positive_mass: the mean over anchors of sum_j s_ij, the row sum of label similarity. With one-hot labels, the
  number of same-class contrasts. Near 0, the loss has (almost) no positives to pull together.
- target_entropy: the mean entropy (nats) of the loss's target q_ij = s_ij / sum_j s_ij; exp() of it is the
  effective number of positives. One-hot labels: log(positive count); soft labels spread it.
- positive_prob: the mean over anchors of sum_j p_ij s_ij, p_ij the latent softmax of z_i . z_j / tau over the
  contrasts: the expected label similarity of the contrast the model's softmax points at. With one-hot labels,
  its probability on the anchor's positives. At chance it is positive_mass / (number of contrasts); it rises as
  the encoder learns.
Of the projections (Wang and Isola 2020, "Understanding contrastive representation learning through alignment and
uniformity on the hypersphere"):
- alignment: the mean squared distance ||z_a - z_b||^2 between the views of one source image, in [0, 4]; lower
  is better aligned.
- uniformity: log mean exp(-2 ||z_i - z_j||^2) over pairs of distinct views; about -4 when spread over the sphere,
  0 when every projection is the same point (collapse).

The contrast-set scalars and uniformity are estimated on at most MAX_ANCHORS anchors (evenly strided rows), so
their cost stays a [MAX_ANCHORS, contrasts] matrix whatever the batch or queue size.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from genscl_jax.objectives import losses, momentum_encoder

MAX_ANCHORS = 256


def anchor_rows(num_rows: int, max_rows: int = MAX_ANCHORS) -> np.ndarray:
    """Static indices of at most `max_rows` rows, evenly strided over `num_rows` (the diagnostics' anchors)."""
    stride = max(1, -(-num_rows // max_rows))
    return np.arange(0, num_rows, stride)


def contrast_diagnostics(features: jax.Array, labels: jax.Array, *, contrast_features: jax.Array | None = None,
                         contrast_labels: jax.Array | None = None, contrast_mask: jax.Array | None = None,
                         exclude_self: bool | None = None, temperature: float = 0.1,
                         max_anchors: int = MAX_ANCHORS) -> dict[str, jax.Array]:
    """positive_mass, target_entropy and positive_prob of anchors `features` [N, D] (unit rows) with label
    distributions `labels` [N, C], over the contrast set that generalized_supcon_loss gets from the same arguments."""
    contrast_features, contrast_labels, exclude_self = losses.resolve_contrasts(
        features, labels, contrast_features, contrast_labels, exclude_self)
    rows = anchor_rows(features.shape[0], max_anchors)
    anchors = jax.lax.stop_gradient(features[rows]).astype(jnp.float32)
    contrasts = jax.lax.stop_gradient(contrast_features).astype(jnp.float32)
    keep = _kept_pairs(rows, contrasts.shape[0], exclude_self, contrast_mask)
    similarity = jnp.where(keep, losses.label_similarity(labels[rows], contrast_labels), 0.0)
    mass = jnp.sum(similarity, axis=1)
    target = similarity / jnp.maximum(mass, 1e-12)[:, None]
    entropy = -jnp.sum(jnp.where(target > 0, target * jnp.log(jnp.where(target > 0, target, 1.0)), 0.0), axis=1)
    logits = jnp.matmul(anchors, contrasts.T, precision=jax.lax.Precision.HIGHEST) / temperature
    latent = jax.nn.softmax(jnp.where(keep, logits, -jnp.inf), axis=1)
    positive_prob = jnp.sum(jnp.where(keep, latent * similarity, 0.0), axis=1)
    return {"positive_mass": jnp.mean(mass), "target_entropy": jnp.mean(entropy),
            "positive_prob": jnp.mean(positive_prob)}


def _kept_pairs(rows: np.ndarray, num_contrasts: int, exclude_self: bool, contrast_mask) -> jax.Array:
    """[A, M] bool: the (anchor, contrast) pairs the loss keeps, for anchors at full-batch positions `rows`."""
    keep = jnp.ones((len(rows), num_contrasts), bool)
    if exclude_self:
        keep = keep & (jnp.asarray(rows)[:, None] != jnp.arange(num_contrasts)[None, :])
    if contrast_mask is not None:
        keep = keep & contrast_mask[None, :]
    return keep


def alignment_uniformity(projection: jax.Array, num_views: int,
                         max_anchors: int = MAX_ANCHORS) -> dict[str, jax.Array]:
    """alignment and uniformity of `projection` [B * V, D] (unit rows, batch-major: row b * V + v is view v of
    image b). With one view there are no view pairs: uniformity only."""
    z = jax.lax.stop_gradient(projection).astype(jnp.float32)
    rows = anchor_rows(z.shape[0], max_anchors)
    squared = jnp.maximum(2.0 - 2.0 * jnp.matmul(z[rows], z.T, precision=jax.lax.Precision.HIGHEST), 0.0)
    others = jnp.asarray(rows)[:, None] != jnp.arange(z.shape[0])[None, :]
    uniformity = (jax.nn.logsumexp(jnp.where(others, -2.0 * squared, -jnp.inf))
                  - jnp.log(jnp.sum(others).astype(jnp.float32)))
    result = {"uniformity": uniformity}
    if num_views > 1:
        views = z.reshape(-1, num_views, z.shape[-1])
        first, second = np.triu_indices(num_views, k=1)
        result["alignment"] = jnp.mean(jnp.sum(jnp.square(views[:, first] - views[:, second]), axis=-1))
    return result


def queue_key_age(queue: dict[str, jax.Array], keys_per_step: int) -> jax.Array:
    """The mean age in steps of the queue's stored keys, right after this step's keys went in (theirs is 0).

    The queue is a ring written `keys_per_step` keys per step, so a slot's age is how many writes ago the pointer
    passed it, in whole steps."""
    size = queue["keys"].shape[0]
    written_ago = (queue["pointer"] - 1 - jnp.arange(size)) % size
    age = (written_ago // keys_per_step).astype(jnp.float32)
    filled = momentum_encoder.filled_mask(queue)
    return jnp.sum(jnp.where(filled, age, 0.0)) / jnp.maximum(jnp.sum(filled), 1)


def dominant_class_agreement(scores: jax.Array, targets: jax.Array) -> jax.Array:
    """The share of rows whose top class of `scores` [N, C] is a dominant class of `targets` [N, C] (one with the
    row's largest mass: Mixup's two classes at lambda 0.5 both count). A row whose top score is tied between a
    dominant class and another counts as a miss.

    Max reductions over the classes only, no argmax: XLA:TPU's partitioner all-gathered an argmax's index operand
    (an int32 iota of [rows, classes]) across the batch, 179 times per step in the ImageNet recipe (BENCHMARKS 11.2),
    where these reductions stay on each device's rows."""
    dominant = targets >= jnp.max(targets, axis=-1, keepdims=True)
    best_dominant = jnp.max(jnp.where(dominant, scores, -jnp.inf), axis=-1)
    best_other = jnp.max(jnp.where(dominant, -jnp.inf, scores), axis=-1)
    return jnp.mean((best_dominant > best_other).astype(jnp.float32))


def teacher_agreement(teacher_labels: jax.Array, labels: jax.Array) -> jax.Array:
    """The share of views whose teacher top-1 class is the dominant class of their (mixed) ground-truth label."""
    return dominant_class_agreement(teacher_labels, labels)
