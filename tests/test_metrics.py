"""Top-1/top-5 counts on device against a NumPy count, padding excluded; the kNN monitor, linear evaluation and
supervised training all report through them."""

import jax.numpy as jnp
import numpy as np

from genscl_jax.training import metrics


def numpy_top1_top5(scores, labels, mask):
    order = np.argsort(-scores, axis=1, kind="stable")
    top1 = (order[:, 0] == labels) & mask
    top5 = (order[:, :5] == labels[:, None]).any(axis=1) & mask
    return top1.sum() / mask.sum(), top5.sum() / mask.sum()


def test_classification_metrics_match_numpy_and_skip_padding():
    rng = np.random.default_rng(0)
    batches = []
    for size, valid in ((16, 16), (16, 9)):  # the last batch is padded
        scores = rng.normal(size=(size, 12)).astype(np.float32)
        labels = rng.integers(0, 12, size)
        mask = np.arange(size) < valid
        scores[~mask] = 0.0
        scores[~mask, labels[~mask]] = 10.0  # padding that would count as correct if it were not masked
        batches.append({"image": jnp.asarray(scores), "label": jnp.asarray(labels), "mask": jnp.asarray(mask)})
    got = metrics.classification_metrics(lambda x: x, batches)
    everything = {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in ("image", "label", "mask")}
    want = numpy_top1_top5(everything["image"], everything["label"], everything["mask"])
    np.testing.assert_allclose([got["test_top1"], got["test_top5"]], want)
    assert 0 < got["test_top1"] < got["test_top5"] < 1


def test_empty_evaluation_is_zero_not_an_error():
    assert metrics.classification_metrics(lambda x: x, []) == {"test_top1": 0.0, "test_top5": 0.0}
    assert metrics.top1_top5({"top1": 3, "top5": 4, "count": 4}, prefix="knn_") == {"knn_top1": 0.75,
                                                                                   "knn_top5": 1.0}
