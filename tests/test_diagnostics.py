"""The GenSCL diagnostics (objectives/diagnostics.py) against NumPy spelled out pair by pair, at their extremes, and
the queue's key age against a queue that stamps every key with its step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genscl_jax.objectives import diagnostics, momentum_encoder


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference(features, labels, contrasts, contrast_labels, mask, exclude_self, temperature, rows):
    """positive_mass, target_entropy, positive_prob over anchors `rows`, one pair at a time."""
    mass, entropy, prob = [], [], []
    y, yc = unit(labels), unit(contrast_labels)
    for i in rows:
        kept = [j for j in range(len(contrasts)) if mask[j] and not (exclude_self and i == j)]
        s = np.array([y[i] @ yc[j] for j in kept])
        logits = np.array([features[i] @ contrasts[j] / temperature for j in kept])
        p = np.exp(logits - logits.max())
        p /= p.sum()
        q = s / s.sum() if s.sum() > 0 else s
        mass.append(s.sum())
        entropy.append(-sum(v * np.log(v) for v in q if v > 0))
        prob.append(p @ s)
    return {"positive_mass": np.mean(mass), "target_entropy": np.mean(entropy), "positive_prob": np.mean(prob)}


def soft_labels(rng, n, classes):
    a, b, lam = rng.integers(0, classes, n), rng.integers(0, classes, n), rng.random((n, 1))
    return lam * np.eye(classes)[a] + (1 - lam) * np.eye(classes)[b]


@pytest.mark.parametrize("max_anchors", [64, 4])  # every anchor; a strided subset of them
def test_all_vs_all_matches_numpy(max_anchors):
    rng = np.random.default_rng(0)
    features, labels = unit(rng.normal(size=(10, 5))), soft_labels(rng, 10, 4)
    got = diagnostics.contrast_diagnostics(jnp.asarray(features, jnp.float32), jnp.asarray(labels, jnp.float32),
                                           temperature=0.5, max_anchors=max_anchors)
    rows = diagnostics.anchor_rows(10, max_anchors)
    assert len(rows) == min(10, max_anchors) and rows[-1] == 9  # spread over the whole batch
    want = reference(features, labels, features, labels, np.ones(10, bool), True, 0.5, rows)
    for key, value in want.items():
        np.testing.assert_allclose(float(got[key]), value, rtol=1e-5, err_msg=key)


def test_key_contrasts_with_a_queue_mask_match_numpy():
    rng = np.random.default_rng(1)
    features, labels = unit(rng.normal(size=(6, 5))), soft_labels(rng, 6, 3)
    contrasts, contrast_labels = unit(rng.normal(size=(14, 5))), soft_labels(rng, 14, 3)
    mask = np.arange(14) < 11  # three queue slots not yet written
    got = diagnostics.contrast_diagnostics(
        jnp.asarray(features, jnp.float32), jnp.asarray(labels, jnp.float32),
        contrast_features=jnp.asarray(contrasts, jnp.float32), contrast_labels=jnp.asarray(contrast_labels),
        contrast_mask=jnp.asarray(mask), exclude_self=True, temperature=0.2)
    want = reference(features, labels, contrasts, contrast_labels, mask, True, 0.2, range(6))
    for key, value in want.items():
        np.testing.assert_allclose(float(got[key]), value, rtol=1e-5, err_msg=key)


def test_one_hot_labels_count_positives_and_chance_is_mass_over_contrasts():
    classes = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    labels = jnp.asarray(np.eye(3)[classes], jnp.float32)
    same = jnp.ones((8, 4)) / 2.0  # identical projections: the latent softmax is uniform, i.e. chance
    got = diagnostics.contrast_diagnostics(same, labels)
    positives = np.array([np.sum(classes == c) - 1 for c in classes])
    np.testing.assert_allclose(float(got["positive_mass"]), positives.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(got["target_entropy"]), np.log(positives).mean(), rtol=1e-6)
    np.testing.assert_allclose(float(got["positive_prob"]), positives.mean() / 7, rtol=1e-6)


def test_alignment_and_uniformity_match_numpy_and_their_extremes():
    rng = np.random.default_rng(2)
    z = unit(rng.normal(size=(12, 6)))  # 4 images x 3 views, batch-major
    got = diagnostics.alignment_uniformity(jnp.asarray(z, jnp.float32), num_views=3)
    views = z.reshape(4, 3, 6)
    pairs = [(a, b) for a in range(3) for b in range(a + 1, 3)]
    alignment = np.mean([np.sum((views[i, a] - views[i, b]) ** 2) for i in range(4) for a, b in pairs])
    distances = [np.sum((z[i] - z[j]) ** 2) for i in range(12) for j in range(12) if i != j]
    np.testing.assert_allclose(float(got["alignment"]), alignment, rtol=1e-5)
    np.testing.assert_allclose(float(got["uniformity"]), np.log(np.mean(np.exp(-2 * np.array(distances)))),
                               rtol=1e-5)
    collapsed = diagnostics.alignment_uniformity(jnp.ones((8, 4)) / 2.0, num_views=2)
    assert abs(float(collapsed["alignment"])) < 1e-6 and abs(float(collapsed["uniformity"])) < 1e-6
    assert "alignment" not in diagnostics.alignment_uniformity(jnp.asarray(z, jnp.float32), num_views=1)


@pytest.mark.parametrize("size, keys_per_step", [(48, 16), (40, 16), (16, 16)])  # whole steps; a step split by
def test_key_age_equals_the_age_of_stamped_keys(size, keys_per_step):  # the wrap; one step fills the queue
    queue = momentum_encoder.empty_queue(size, 2, 3, with_teacher_labels=False)
    stamps = np.full(size, -1)
    for step in range(7):
        entries = {"keys": jnp.ones((keys_per_step, 2)), "labels": jnp.ones((keys_per_step, 3))}
        slots = (int(queue["pointer"]) + np.arange(keys_per_step)) % size
        stamps[slots] = step
        queue = momentum_encoder.enqueue(queue, entries)
        filled = stamps >= 0
        np.testing.assert_allclose(float(diagnostics.queue_key_age(queue, keys_per_step)),
                                   np.mean(step - stamps[filled]), rtol=1e-6, err_msg=f"step {step}")


def test_dominant_class_agreement_is_argmax_agreement_without_ties_and_counts_either_tied_class():
    rng = np.random.default_rng(0)
    scores, targets = rng.normal(size=(256, 10)), rng.dirichlet(np.ones(10), size=256)
    expected = np.mean(scores.argmax(-1) == targets.argmax(-1))
    assert float(diagnostics.dominant_class_agreement(scores, targets)) == pytest.approx(expected)
    # Mixup at lambda 0.5: either of the two classes is the right answer (argmax would accept only the first).
    half = jnp.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    predicted = jnp.array([[0.0, 2.0, 1.0], [2.0, 0.0, 1.0], [0.0, 1.0, 2.0]])
    assert float(diagnostics.dominant_class_agreement(predicted, half)) == pytest.approx(2 / 3)
    # A top score shared by a dominant class and another is no agreement: an untrained, constant classifier scores 0.
    assert float(diagnostics.dominant_class_agreement(jnp.zeros((2, 3)), jnp.eye(3)[:2])) == 0.0


def test_teacher_agreement_counts_matching_top1_classes():
    teacher = jax.nn.one_hot(jnp.array([0, 1, 2, 2]), 3) * 0.8 + 0.05
    mixed = jnp.array([[0.6, 0.4, 0.0], [0.0, 0.3, 0.7], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert float(diagnostics.teacher_agreement(teacher, mixed)) == 0.5
