"""Weighted kNN: test accuracy of a nearest-neighbour vote on the encoder's pooled features (pretraining's periodic
evaluation, pretrain_eval.py, runs it).

The voting rule is InstDisc's (Wu et al. 2018), the usual kNN monitor of contrastive pretraining: features are
L2-normalised, each test example takes the k training examples of highest cosine similarity, each neighbour
votes for its class with weight exp(similarity / T), and the class with the largest summed weight wins.

Memory stays bounded at any dataset size: queries arrive one evaluation batch at a time and the memory bank is
scanned in chunks, keeping a running top-k, so at most [batch, bank_chunk] similarities exist at once.
Everything stays on the mesh; only scalar counts come back to the host, so it also runs on several hosts.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp

from genscl_jax.runtime import parallel

BANK_CHUNK = 4096  # bank rows compared per scan step


def neighbour_class_scores(queries: jax.Array, bank: jax.Array, bank_labels: jax.Array, bank_valid: jax.Array, *,
                           num_classes: int, k: int, temperature: float, bank_chunk: int = BANK_CHUNK) -> jax.Array:
    """Summed exp(sim / T) votes [Q, num_classes] of each query's k nearest valid bank rows.

    queries [Q, D] and bank [N, D] must be L2-normalised; rows with bank_valid False never vote. With fewer
    than k valid rows, every valid row votes.
    """
    bank, bank_labels, bank_valid = _pad_to_chunks(bank, bank_labels, bank_valid, bank_chunk)
    chunk = min(bank_chunk, bank.shape[0])
    num_queries = queries.shape[0]

    def merge_chunk(carry, rows):
        top_sim, top_labels = carry
        features, labels, valid = rows
        sim = jnp.where(valid[None, :], queries @ features.T, -jnp.inf)
        chunk_sim, index = jax.lax.top_k(sim, min(k, chunk))
        sims = jnp.concatenate([top_sim, chunk_sim], axis=1)
        all_labels = jnp.concatenate([top_labels, labels[index]], axis=1)
        best_sim, best = jax.lax.top_k(sims, k)
        return (best_sim, jnp.take_along_axis(all_labels, best, axis=1)), None

    init = (jnp.full((num_queries, k), -jnp.inf, jnp.float32), jnp.zeros((num_queries, k), jnp.int32))
    rows = (bank.reshape(-1, chunk, bank.shape[-1]), bank_labels.reshape(-1, chunk), bank_valid.reshape(-1, chunk))
    (top_sim, top_labels), _ = jax.lax.scan(merge_chunk, init, rows)
    weights = jnp.exp(top_sim / temperature)  # exp(-inf) = 0: empty slots do not vote
    return jnp.einsum("qk,qkc->qc", weights, jax.nn.one_hot(top_labels, num_classes, dtype=jnp.float32))


def _pad_to_chunks(bank, labels, valid, bank_chunk):
    """Pads the bank with invalid rows to a whole number of chunks (one chunk if it is smaller)."""
    size = bank.shape[0]
    chunk = min(bank_chunk, size)
    pad = -size % chunk
    if not pad:
        return bank, labels, valid
    return (jnp.pad(bank, ((0, pad), (0, 0))), jnp.pad(labels, (0, pad)),
            jnp.pad(valid, (0, pad), constant_values=False))


FeatureFn = Callable[[Any, jax.Array], jax.Array]  # (state, images [B, H, W, C]) -> L2-normalised features


def build_memory_bank(state: Any, features_fn: FeatureFn, batches: Iterable[dict], max_examples: int = 0):
    """(features, labels, valid) of the training batches, concatenated on the mesh; at most `max_examples`."""
    features, labels, masks, seen = [], [], [], 0
    for batch in batches:
        features.append(parallel.settled(features_fn(state, batch["image"])))  # one gather at a time on CPU processes
        labels.append(batch["label"])
        masks.append(batch["mask"])
        seen += batch["label"].shape[0]
        if 0 < max_examples <= seen:
            break  # padding only ever comes at the end of a split, so `seen` valid rows are in hand
    valid = jnp.concatenate(masks)
    if max_examples > 0:
        valid = valid & (jnp.cumsum(valid) <= max_examples)
    return jnp.concatenate(features), jnp.concatenate(labels), valid
