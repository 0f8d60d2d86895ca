"""DataSource: config.dataset resolved once into its facts, view plans and batches, and the factories that make it
(`resolve`, and `readable_source`, which first makes the data readable).

Which dataset exists and how it is read is in `registry`; an image folder's and a tfds:NAME dataset's entry is made
here from the data. Importing this module imports no TensorFlow: the synthetic reader is JAX only, and the modules
that import TensorFlow and tfds (`tf_pipeline` and the augment modules, `tfds_builders`, `tf_stats`, `tfds_by_name`)
are imported inside the functions that read such a dataset, and nowhere else. Facts of a built-in dataset never need
them; an image folder's need them only the first time, to measure its statistics.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from genscl_jax.data import device_preprocess, image_folder, registry, stats, subset, synthetic, views
from genscl_jax.data.registry import DatasetInfo
from genscl_jax.runtime import parallel, preemption


def _dataset_entry(config: Any) -> registry.Dataset:
    """config.dataset's registry entry; for image_folder and tfds:NAME one made from the data, once per process.

    config.data_mean / config.data_std, when given, replace the statistics (and, for those two, set the channels).
    """
    mean, std = tuple(config.data_mean), tuple(config.data_std)
    if config.dataset == registry.IMAGE_FOLDER:
        return _image_folder_entry(config.data_dir, config.train_split, config.test_split, mean, std)
    if registry.is_tfds_name(config.dataset):
        return _tfds_entry(config.dataset[len(registry.TFDS_PREFIX):], config.data_dir or None, config.train_split,
                           config.test_split, mean, std)
    entry = registry.get(config.dataset)
    if mean:
        entry = dataclasses.replace(entry, info=dataclasses.replace(entry.info, mean=mean, std=std))
    return entry


# Cached: listing a large folder (on gs://, a request per class) or preparing a tfds builder is done once per run,
# not at every evaluation.
@functools.lru_cache(maxsize=None)
def _image_folder_entry(root: str, train_split: str, test_split: str, mean: tuple[float, ...],
                        std: tuple[float, ...]) -> registry.Dataset:
    layout = image_folder.scan(root, train_split, test_split)
    if mean:
        return image_folder.entry(layout, stats.Stats(channels=len(mean), mean=mean, std=std))

    def measure() -> stats.Stats:
        from genscl_jax.data import tf_stats  # TensorFlow, only to measure: later runs read the stored result.

        train = layout.splits[layout.train_split].files
        others = tuple(f for split, s in layout.splits.items() if split != layout.train_split for f in s.files)
        return tf_stats.folder_stats(train, others)

    measured = stats.load_or_compute(image_folder.stats_path(layout), layout.fingerprint(), measure,
                                     what=f"the image folder {root}")
    return image_folder.entry(layout, measured)


@functools.lru_cache(maxsize=None)
def _tfds_entry(name: str, data_dir: str | None, train_split: str, test_split: str, mean: tuple[float, ...],
                std: tuple[float, ...]) -> registry.Dataset:
    from genscl_jax.data import tfds_by_name  # TensorFlow: only a tfds:NAME dataset loads it for its facts.

    return tfds_by_name.entry(name, data_dir, train_split=train_split, test_split=test_split, mean=mean, std=std)


@dataclasses.dataclass(frozen=True)
class TrainingInput:
    """A stream of training batches and what the step must do to them: the two halves of one view plan."""

    preprocessing: device_preprocess.Preprocessing  # the step's share (device_preprocess.train_views)
    batches: Callable[[int], Iterator[dict[str, jax.Array]]]  # start_step -> global batches from that step on


@dataclasses.dataclass(frozen=True)
class DataSource:
    """config.dataset resolved once: its facts (`info`, with the run's channel count), its view plans and its
    batches.

    runner makes it (`readable_source`, or `resolve` where the data is known to be readable) and passes it down; nothing
    below looks the dataset or the augmentation policy up again in the config.
    """

    entry: registry.Dataset
    info: DatasetInfo
    data_dir: str | None
    image_size: int
    seed: int  # data randomness (shuffles, augmentations, the synthetic task) is keyed by it
    views: views.RunViews  # the run's augmentation, resolved once (genscl_jax.data.views)
    subset_seed: int = 0  # which training examples a subset and a bounded kNN bank hold (config.train_subset_seed)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(self.info.num_train // batch_size, 1)

    def training_input(self, mesh: Mesh, plan: views.ViewPlan, *, batch_size: int,
                       num_views: int) -> TrainingInput:
        """Global training batches {"image": uint8 [B, V, H, W, C], "label": [B]} of `num_views` views per image made
        by the host's half of `plan` (one of self.views), with the device preprocessing that finishes them."""
        def batches(start_step: int) -> Iterator[dict[str, jax.Array]]:
            return self._train_batches(mesh, plan, start_step=start_step, batch_size=batch_size, num_views=num_views)

        return TrainingInput(preprocessing=device_preprocess.for_plan(plan, self.info), batches=batches)

    def eval_preprocessing(self) -> device_preprocess.Preprocessing:
        """What a step must do to `eval_batches`' images: normalise them with the dataset's statistics."""
        return device_preprocess.for_plan(self.views.evaluation, self.info)

    def _train_batches(self, mesh: Mesh, plan: views.ViewPlan, *, start_step: int, batch_size: int,
                       num_views: int) -> Iterator[dict[str, jax.Array]]:
        if self.entry.reader == "synthetic":  # Generated views: no augmentation to do on the host.
            yield from synthetic.train_iterator(
                self.seed, start_step, self.entry.train_selection, batch_size=batch_size, image_size=self.image_size,
                num_classes=self.info.num_classes, channels=self.info.channels, num_views=num_views,
                sharding=parallel.batch_sharded(mesh))
            return
        from genscl_jax.data import tf_pipeline  # The TensorFlow boundary: only here and in eval_batches.

        local = tf_pipeline.create_train_iterator(
            dataset=self.entry, data_dir=self.data_dir, global_batch_size=batch_size, plan=plan,
            num_views=num_views, seed=self.seed, start_step=start_step, channels=self.info.channels)
        for batch in local:
            yield parallel.global_batch_from_local(batch, mesh)

    def eval_examples(self, split: str = "test") -> int:
        """How many examples one pass of eval_batches(split=split) holds (its padding not counted)."""
        if self.entry.reader == "synthetic" and not (split == "train" and self.entry.train_selection is not None):
            return synthetic.EVAL_EXAMPLES
        return self.info.num_train if split == "train" else self.info.num_test

    def with_train_subset(self, per_class: int, seed: int) -> DataSource:
        """This source reading only `per_class` training examples of each class (config.train_subset), drawn with
        `seed`; a class with fewer is a one-line DataError. Every reader of the training split follows it: the
        training batches, epochs and steps, the probes' and the kNN bank's features."""
        selection = subset.select(*self._train_keys_and_labels(), per_class, seed, self.info.num_classes,
                                  strict_what="config.train_subset")
        return self._selecting(selection)

    def bank_batches(self, mesh: Mesh, *, batch_size: int, max_examples: int) -> Iterator[dict[str, jax.Array]]:
        """eval_batches of the training split for a kNN bank of at most `max_examples` (0: all): a class-balanced
        sample drawn with this source's seed where the labels are at hand (a subset, an image folder), else (a whole
        tfds split) an evenly spread one, and the first examples of the synthetic task (each drawn independently).
        Drawn with config.train_subset_seed, not the run's seed: every run's bank holds the same images."""
        if not max_examples or max_examples >= self.eval_examples("train"):
            return self.eval_batches(mesh, batch_size=batch_size, split="train")
        if self.entry.train_selection is not None or self.entry.reader == "image_folder":
            within = subset.Selection(*self._train_keys_and_labels())
            per_class = subset.bank_per_class(max_examples, self.info.num_classes)
            bank = self._selecting(within.balanced(per_class, self.subset_seed, self.info.num_classes))
            return bank.eval_batches(mesh, batch_size=batch_size, split="train")
        return self.eval_batches(mesh, batch_size=batch_size, split="train", spread=max_examples)

    def _selecting(self, selection: subset.Selection) -> DataSource:
        entry = dataclasses.replace(self.entry, train_selection=selection)
        return dataclasses.replace(self, entry=entry, info=dataclasses.replace(self.info, num_train=len(selection)))

    def _train_keys_and_labels(self):
        """(keys, labels) of every example of the training split, in its fixed order (see subset.Selection)."""
        if self.entry.train_selection is not None:
            return self.entry.train_selection.keys, self.entry.train_selection.labels
        if self.entry.reader == "synthetic":
            return np.arange(self.info.num_train), synthetic.position_labels(self.info.num_train, self.info.num_classes)
        if self.entry.reader == "image_folder":
            labels = self.entry.folder.splits[self.info.train_split].labels
            return np.arange(len(labels)), np.asarray(labels)
        return _tfds_keys_and_labels(self.entry, self.data_dir)

    def eval_batches(self, mesh: Mesh, *, batch_size: int, split: str = "test",
                     spread: int = 0) -> Iterator[dict[str, jax.Array]]:
        """One pass over an evaluation split, {"image": uint8 [B, H, W, C], "label", "mask"}; padding has mask False.

        A step normalises the images with `eval_preprocessing()` (device_preprocess.normalize). spread: a tfds split
        read as an evenly spread sample of that many examples (bank_batches). A stop request (SIGTERM, Ctrl-C) ends
        the pass between batches with preemption.StopRequested: every evaluation and feature extraction reads its
        batches here, and is abandoned promptly so (preemption.poll_batches)."""
        return preemption.poll_batches(self._eval_batches(mesh, batch_size=batch_size, split=split, spread=spread))

    def _eval_batches(self, mesh: Mesh, *, batch_size: int, split: str,
                      spread: int) -> Iterator[dict[str, jax.Array]]:
        if self.entry.reader == "synthetic" and split == "train" and self.entry.train_selection is not None:
            yield from synthetic.selection_eval_batches(
                self.entry.train_selection.keys, batch_size=batch_size, image_size=self.image_size,
                num_classes=self.info.num_classes, channels=self.info.channels, sharding=parallel.batch_sharded(mesh))
            return
        if self.entry.reader == "synthetic":
            # Its own seeds per split, so the "train" and "test" examples differ.
            seed = self.seed + (1_000_003 if split == "test" else 2_000_003)
            num_examples = min(spread or synthetic.EVAL_EXAMPLES, synthetic.EVAL_EXAMPLES)
            yield from synthetic.eval_batches(
                seed, num_examples=num_examples, batch_size=batch_size, image_size=self.image_size,
                num_classes=self.info.num_classes, channels=self.info.channels,
                sharding=parallel.batch_sharded(mesh))
            return
        from genscl_jax.data import tf_pipeline  # The TensorFlow boundary (see _train_batches).

        local = tf_pipeline.create_eval_iterator(
            dataset=self.entry, data_dir=self.data_dir, global_batch_size=batch_size, image_size=self.image_size,
            split=split, channels=self.info.channels, spread=spread)
        for batch in local:
            yield parallel.global_batch_from_local(batch, mesh)


@functools.lru_cache(maxsize=None)
def _tfds_keys_and_labels(entry: registry.Dataset, data_dir: str | None):
    from genscl_jax.data import tf_pipeline  # TensorFlow: a pass over a tfds split's labels, once per process.

    return tf_pipeline.split_keys_and_labels(entry, data_dir)


def resolve(config: Any) -> DataSource:
    """The DataSource of config.dataset, read with config.channels channels (0: the dataset's own), and only
    config.train_subset examples of each class (0: all) when set."""
    entry = _dataset_entry(config)
    source = DataSource(entry=entry, info=entry.info.with_channels(config.channels),
                        data_dir=config.data_dir or None, image_size=config.image_size, seed=config.seed,
                        views=views.from_config(config, entry), subset_seed=config.train_subset_seed)
    if config.train_subset:
        return source.with_train_subset(config.train_subset, config.train_subset_seed)
    return source


def readable_source(config: Any) -> DataSource:
    """Makes config.dataset readable and resolves it, or raises the one-line DataError that says why it is not,
    before a run starts.

    A tfds dataset that is not prepared and cannot be prepared from here (manual files missing, download server
    unreachable) fails at once rather than after minutes of download retries; an image folder is listed and
    checked, and its statistics measured or read.
    """
    tfds_read = _tfds_builder(config)
    if tfds_read is not None:
        from genscl_jax.data import tfds_builders

        tfds_builders.check_can_prepare(*tfds_read)
        tfds_builders.prepare_builder(*tfds_read)
    return resolve(config)


def download_needed(config: Any) -> str | None:
    """Why config.dataset can be read here only after a download (one phrase), or None (tfds_builders.
    download_needed); image folders and the synthetic task never need one. Imports TensorFlow for a tfds dataset."""
    tfds_read = _tfds_builder(config)
    if tfds_read is None:
        return None
    from genscl_jax.data import tfds_builders

    return tfds_builders.download_needed(*tfds_read)


def _tfds_builder(config: Any):
    """(builder, data_dir, registry entry or None) of a dataset read through tfds, else None."""
    builtin = registry.DATASETS.get(config.dataset)
    if not (registry.is_tfds_name(config.dataset) or (builtin and builtin.reader == "tfds")):
        return None
    from genscl_jax.data import tfds_builders  # TensorFlow: only a dataset read through tfds loads it.

    data_dir = config.data_dir or None
    tfds_name = builtin.tfds_name if builtin else config.dataset[len(registry.TFDS_PREFIX):]
    return tfds_builders.make_builder(tfds_name, data_dir, builtin.builder if builtin else ""), data_dir, builtin
