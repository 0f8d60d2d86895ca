"""The trainers' one door to data: global batches on the mesh, from tfds or from the synthetic generator.

The synthetic path imports no TensorFlow; tfds datasets import the input pipeline (and TensorFlow) lazily.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import jax
from jax.sharding import Mesh

from genscl_jax import parallel
from genscl_jax.data import synthetic


@dataclasses.dataclass(frozen=True)
class DataSpec:
    num_classes: int
    num_train: int
    num_test: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def data_spec(config: Any) -> DataSpec:
    if config.dataset == "synthetic":
        channels = config.channels or 3
        return DataSpec(synthetic.NUM_CLASSES, synthetic.NUM_TRAIN, synthetic.NUM_TEST, channels,
                        (0.0,) * channels, (1.0,) * channels)
    from genscl_jax.data import tf_pipeline as input_pipeline

    info = input_pipeline.get_dataset_info(config.dataset)
    channels = config.channels or info.channels
    mean, std = tuple(info.mean), tuple(info.std)
    if channels != len(mean):  # e.g. Fashion-MNIST's one channel repeated to three
        mean, std = mean[:1] * channels, std[:1] * channels
    return DataSpec(info.num_classes, info.num_train, info.num_test, channels, mean, std)


def steps_per_epoch(config: Any, batch_size: int | None = None) -> int:
    return max(data_spec(config).num_train // (batch_size or config.batch_size), 1)


def train_batches(config: Any, mesh: Mesh, *, start_step: int, batch_size: int, augment: str,
                  num_views: int) -> Iterator[dict[str, jax.Array]]:
    """Global training batches {"image": [B, V, H, W, C], "label": [B]} from `start_step` on."""
    spec = data_spec(config)
    if config.dataset == "synthetic":
        yield from synthetic.train_iterator(
            config.seed, start_step, batch_size=batch_size, image_size=config.image_size,
            channels=spec.channels, num_views=num_views, sharding=parallel.batch_sharded(mesh))
        return
    from genscl_jax.data import tf_pipeline as input_pipeline

    local = input_pipeline.create_train_iterator(
        dataset=config.dataset, data_dir=config.data_dir or None, global_batch_size=batch_size,
        image_size=config.image_size, policy=augment, num_views=num_views, seed=config.seed,
        start_step=start_step, device_color_augment=config.device_color_augment and augment == "simclr",
        channels=spec.channels)
    for batch in local:
        yield parallel.global_batch_from_local(batch, mesh)


def eval_batches(config: Any, mesh: Mesh, *, split: str = "test") -> Iterator[dict[str, jax.Array]]:
    """One pass over an evaluation split, {"image": [B, H, W, C], "label", "mask"}; padding has mask False."""
    spec = data_spec(config)
    if config.dataset == "synthetic":
        # Its own seeds per split, so the "train" and "test" examples differ.
        seed = config.seed + (1_000_003 if split == "test" else 2_000_003)
        yield from synthetic.eval_batches(
            seed, num_examples=synthetic.EVAL_EXAMPLES, batch_size=config.eval_batch_size,
            image_size=config.image_size, channels=spec.channels, sharding=parallel.batch_sharded(mesh))
        return
    from genscl_jax.data import tf_pipeline as input_pipeline

    local = input_pipeline.create_eval_iterator(
        dataset=config.dataset, data_dir=config.data_dir or None, global_batch_size=config.eval_batch_size,
        image_size=config.image_size, split=split, channels=spec.channels)
    for batch in local:
        yield parallel.global_batch_from_local(batch, mesh)
