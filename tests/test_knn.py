"""kNN: the InstDisc voting rule against NumPy, its accuracy at the extremes, and its run in pretraining's periodic
evaluation beside the online probe."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_tiny_config

from genscl_jax import models, runner
from genscl_jax.trainers import knn

scores_fn = jax.jit(knn.neighbour_class_scores, static_argnames=("num_classes", "k", "temperature", "bank_chunk"))


def normalized(x):
    return np.asarray(models.l2_normalize(jnp.asarray(x, jnp.float32)))


def reference_scores(queries, bank, labels, valid, num_classes, k, temperature):
    """InstDisc's rule spelled out: the k most similar valid rows each add exp(sim / T) to their class."""
    scores = np.zeros((len(queries), num_classes))
    rows = np.flatnonzero(valid)
    for q, query in enumerate(queries):
        sims = bank[rows] @ query
        for i in np.argsort(-sims, kind="stable")[:k]:
            scores[q, labels[rows[i]]] += np.exp(sims[i] / temperature)
    return scores


@pytest.mark.parametrize("k, bank_chunk", [(7, 8), (7, 4096), (60, 16)])  # scanned, one chunk, k > valid rows
def test_votes_match_numpy_reference(k, bank_chunk):
    rng = np.random.default_rng(0)
    bank, queries = normalized(rng.normal(size=(50, 6))), normalized(rng.normal(size=(20, 6)))
    labels = rng.integers(0, 4, 50).astype(np.int32)
    valid = rng.random(50) < 0.8
    got = scores_fn(queries, bank, labels, valid, num_classes=4, k=k, temperature=0.5, bank_chunk=bank_chunk)
    np.testing.assert_allclose(got, reference_scores(queries, bank, labels, valid, 4, k, 0.5), rtol=1e-5)


def clustered(rng, n, num_classes, dim, noise):
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    centres = np.eye(num_classes, dim)
    return normalized(centres[labels] + noise * rng.normal(size=(n, dim))), labels


def top1(queries, query_labels, bank, bank_labels, num_classes, k=20):
    scores = scores_fn(queries, bank, bank_labels, np.ones(len(bank), bool), num_classes=num_classes, k=k,
                       temperature=0.1, bank_chunk=512)
    return float(np.mean(np.argmax(scores, -1) == query_labels))


def test_separable_features_are_all_right():
    rng = np.random.default_rng(1)
    bank, bank_labels = clustered(rng, 2000, 10, 16, noise=0.1)
    queries, query_labels = clustered(rng, 500, 10, 16, noise=0.1)
    assert top1(queries, query_labels, bank, bank_labels, 10) == 1.0


def test_random_labels_give_chance():
    rng = np.random.default_rng(2)
    num_classes, num_queries = 10, 3000
    bank, queries = normalized(rng.normal(size=(2000, 16))), normalized(rng.normal(size=(num_queries, 16)))
    accuracy = top1(queries, rng.integers(0, num_classes, num_queries), bank,
                    rng.integers(0, num_classes, 2000).astype(np.int32), num_classes)
    chance = 1 / num_classes
    assert abs(accuracy - chance) < 3 * np.sqrt(chance * (1 - chance) / num_queries)


def test_memory_bank_drops_padding_and_respects_the_cap():
    def batch(start, num_valid):
        rows = np.arange(start, start + 4)
        return {"image": rows[:, None].astype(np.float32), "label": rows.astype(np.int32),
                "mask": np.arange(4) < num_valid}

    batches = [batch(0, 4), batch(4, 4), batch(8, 2)]
    identity = lambda state, images: jnp.asarray(images)  # noqa: E731
    _, labels, valid = knn.build_memory_bank(None, identity, batches)
    assert list(np.asarray(labels)[np.asarray(valid)]) == list(range(10))
    features, labels, valid = knn.build_memory_bank(None, identity, iter(batches), max_examples=6)
    assert len(features) == 8  # stopped reading after the second batch
    assert list(np.asarray(labels)[np.asarray(valid)]) == list(range(6))


@pytest.mark.slow
def test_pretraining_logs_knn_and_probe_accuracy_on_one_schedule(tmp_path):
    config = make_tiny_config(eval_every_steps=2, **{"knn.enabled": True, "knn.k": 20, "knn.max_train_examples": 1000,
                                                      "online_probe.enabled": True})
    summary = runner.run(config, str(tmp_path))
    assert 0.0 <= summary["knn_top1"] <= summary["knn_top5"] <= 1.0
    assert summary["knn_bank_size"] == 1000  # the bounded bank says what it held
    assert 0.0 <= summary["probe_top1"] <= summary["probe_top5"] <= 1.0
    assert summary["knn_best_top1"] >= summary["knn_top1"] and summary["probe_best_top1"] >= summary["probe_top1"]
    # Logged like every metric: written to the run's TensorBoard events at steps 2 and 4.
    assert _logged_steps(tmp_path, "knn_top1") == [2, 4]
    assert _logged_steps(tmp_path, "probe_top1") == [2, 4]
    assert _logged_steps(tmp_path, "probe_train_top1") == [1, 2, 3, 4]


def _logged_steps(workdir, tag):
    from tensorboard.backend.event_processing import event_accumulator

    # clu writes scalars through tf.summary, which stores them as tensor events.
    events = event_accumulator.EventAccumulator(str(workdir), size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    return [event.step for event in events.Tensors(tag)]
