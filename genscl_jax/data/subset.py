"""Class-balanced, seed-fixed selections of a training split: config.train_subset's labelled subset and a bounded
kNN bank. numpy only (no TensorFlow): the readers say which examples a split holds, this module says which to keep.

A selection draws the same number of examples from every class, uniformly, with numpy's generator of its own seed
(config.train_subset_seed, never the run's seed), from the examples' labels in the split's fixed reading order. So
every run of every method with the same dataset and seed reads the same images, and a resumed run the same ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from genscl_jax.data.registry import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class Selection:
    """The kept examples of a split: their identities (a reader's example keys or positions) and labels, sorted by
    identity, so a reader can filter by membership whatever order it reads in."""

    keys: np.ndarray  # int64 [n]
    labels: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return len(self.keys)

    def balanced(self, per_class: int, seed: int, num_classes: int) -> Selection:
        """A class-balanced sample of this selection (at most `per_class` of each class; a class with fewer gives
        all it has): a bounded kNN bank within a labelled subset."""
        return select(self.keys, self.labels, per_class, seed, num_classes, strict_what="")


def select(keys: np.ndarray, labels: np.ndarray, per_class: int, seed: int, num_classes: int, *,
           strict_what: str) -> Selection:
    """`per_class` examples of each of the `num_classes` classes, drawn uniformly with the generator of `seed`.

    strict_what: a class with fewer examples than `per_class` is a one-line DataError naming the class, its count
    and `strict_what` (the setting to lower); "": such a class gives all it has.
    """
    keys, labels = np.asarray(keys, np.int64), np.asarray(labels, np.int64)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in range(num_classes):  # One draw per class, in class order: a class's pick never depends on others'.
        members = np.flatnonzero(labels == label)
        if strict_what and len(members) < per_class:
            raise DataError(f"{strict_what}={per_class}: class {label} has only {len(members)} training examples; "
                            f"use at most {smallest_class(labels, num_classes)} (the smallest class) or 0 (all)")
        chosen.append(rng.permutation(members)[:per_class])
    index = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    order = np.argsort(keys[index], kind="stable")
    return Selection(keys[index][order], labels[index][order])


def smallest_class(labels: np.ndarray, num_classes: int) -> int:
    return int(np.bincount(np.asarray(labels, np.int64), minlength=num_classes)[:num_classes].min())


def bank_per_class(max_examples: int, num_classes: int) -> int:
    """Examples of each class in a kNN bank of at most `max_examples` (at least one of each)."""
    return max(max_examples // num_classes, 1)
