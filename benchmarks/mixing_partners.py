"""Mixing partners: the project's static shifts against the authors' independent random permutations, on the targets.

    python benchmarks/mixing_partners.py                     # B = 128, 10 classes, 2 views, 4000 batches
    python benchmarks/mixing_partners.py --batch 256 --json -

objectives/mixing.py pairs image i with image (i + 1 + v) mod B in view v; the authors' code draws one
`torch.randperm(B)` per view. Over a shuffled batch both give every image a uniformly random partner, but the shift
rules out randperm's coincidences (self-partners, mutual pairs, the same partner in both views) and ties the two
views' partners together. This measures what that does to what the loss sees, per anchor view over the 2B views:

- the row sum of label similarity, sum_{j != i} s_ij (s = cosine of the label distributions, losses.label_similarity);
- the entropy of the target distribution s_ij / sum_j s_ij, which the latent softmax is trained towards.

Each batch draws class ids uniformly (a shuffled, balanced dataset), one lam ~ U(0, 1) per view (Beta(1, 1), the
study's alpha) and labels lam * onehot(a) + (1 - lam) * onehot(b): the shift variant through mixing.mix_views
itself, the permutation variant with the same class ids and lams, so the difference is paired. CutMix labels have
the same form (lam is then the kept area), so mixup stands for both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128, help="source images per batch (B)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batches", type=int, default=4000, help="batches drawn per variant")
    p.add_argument("--chunk", type=int, default=200, help="batches per compiled call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the figures as JSON to this file ('-': stdout)")
    return p.parse_args(argv)


def target_statistics(labels):
    """labels [2B, C] -> (row sums of label similarity without self [2B], target entropies [2B])."""
    import jax.numpy as jnp

    from genscl_jax.objectives import losses

    similarity = losses.label_similarity(labels, labels)
    similarity = similarity * (1.0 - jnp.eye(labels.shape[0]))  # A(i): every view but the anchor itself
    row_sum = similarity.sum(1)
    target = similarity / row_sum[:, None]
    entropy = -jnp.sum(jnp.where(target > 0, target * jnp.log(jnp.where(target > 0, target, 1.0)), 0.0), 1)
    return row_sum, entropy


def one_batch(key, batch: int, classes: int):
    """(shift, permutation) per-anchor statistics of one batch: the same class ids and lams, other partners."""
    import jax
    import jax.numpy as jnp

    from genscl_jax.objectives import mixing

    ids_key, mix_key, perm_key = jax.random.split(key, 3)
    class_ids = jax.random.randint(ids_key, (batch,), 0, classes)
    views = jnp.zeros((batch, 2, 1, 1, 1))  # the labels do not depend on the pixels
    _, shifted = mixing.mix_views(mix_key, views, class_ids, classes, kind="mixup", alpha=1.0)
    onehot = mixing.one_hot_labels(class_ids, classes)
    permuted = []
    for view_key, perm_v in zip(jax.random.split(mix_key, 2), jax.random.split(perm_key, 2)):
        # The lam mix_views drew for this view: from the view's key, as mixing.mix_batch draws it for alpha = 1
        # (tests/test_mixing.py::test_prob_one_is_the_mix_of_every_view_with_the_same_keys pins that).
        lam = jax.random.uniform(jax.random.split(view_key, 3)[0], (), jnp.float32)
        partner = jax.random.permutation(perm_v, batch)
        permuted.append(lam * onehot + (1 - lam) * onehot[partner])
    return (target_statistics(shifted.reshape(2 * batch, classes)),
            target_statistics(jnp.stack(permuted, 1).reshape(2 * batch, classes)))


def main(argv=None) -> dict:
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    import jax
    import numpy as np

    compute = jax.jit(jax.vmap(lambda k: one_batch(k, args.batch, args.classes)))
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.batches)
    parts = [jax.device_get(compute(keys[i:i + args.chunk])) for i in range(0, args.batches, args.chunk)]
    # Per batch: the mean over its 2B anchors; then the paired difference over batches.
    (shift_sum, shift_entropy), (perm_sum, perm_entropy) = (
        tuple(np.concatenate([p[variant][k] for p in parts]).mean(1) for k in range(2)) for variant in range(2))
    figures = {"batch": args.batch, "classes": args.classes, "batches": args.batches, "seed": args.seed}
    for name, shift, perm in (("row_sum", shift_sum, perm_sum), ("entropy", shift_entropy, perm_entropy)):
        difference = shift - perm
        figures[name] = {"shift": float(shift.mean()), "permutation": float(perm.mean()),
                         "shift_minus_permutation": float(difference.mean()),
                         "standard_error": float(difference.std(ddof=1) / np.sqrt(len(difference)))}
    _report(figures, args.json)
    return figures


def _report(figures: dict, json_path: str | None) -> None:
    print(f"B = {figures['batch']}, {figures['classes']} classes, 2 views, {figures['batches']} batches "
          f"(seed {figures['seed']}); per anchor view, mean over anchors and batches:")
    print(f"{'':34s}{'static shift':>14s}{'randperm':>14s}{'shift - perm':>16s}")
    for name, label in (("row_sum", "row sum of label similarity"), ("entropy", "target entropy (nats)")):
        f = figures[name]
        print(f"{label:34s}{f['shift']:14.4f}{f['permutation']:14.4f}"
              f"{f['shift_minus_permutation']:+11.4f} +- {f['standard_error']:.4f}")
    if json_path == "-":
        print(json.dumps(figures, indent=1))
    elif json_path:
        with open(json_path, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
