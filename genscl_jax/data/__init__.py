"""The trainers' one door to data: a dataset's facts, and global batches on the mesh.

Which dataset exists and how it is read is in `registry`. Importing this package imports no TensorFlow:
the synthetic reader is JAX only, and the tf.data pipeline (`tf_pipeline`, which imports TensorFlow and
tfds, as does `augment`) is imported inside the functions that read a tfds dataset, and nowhere else.
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
from jax.sharding import Mesh

from genscl_jax import parallel
from genscl_jax.data import registry, synthetic
from genscl_jax.data.registry import DatasetInfo


def data_spec(config: Any) -> DatasetInfo:
    """The DatasetInfo of config.dataset as read with config.channels channels (0: the dataset's own)."""
    return registry.get(config.dataset).info.with_channels(config.channels)


def steps_per_epoch(config: Any, batch_size: int | None = None) -> int:
    return max(data_spec(config).num_train // (batch_size or config.batch_size), 1)


def total_train_steps(config: Any) -> int:
    """config.num_train_steps, or config.num_epochs passes over the training split."""
    return config.num_train_steps or int(config.num_epochs * steps_per_epoch(config))


def _reads_synthetic(config: Any) -> bool:
    return registry.get(config.dataset).reader == "synthetic"


def train_batches(config: Any, mesh: Mesh, *, start_step: int, batch_size: int, augment: str,
                  num_views: int) -> Iterator[dict[str, jax.Array]]:
    """Global training batches {"image": [B, V, H, W, C], "label": [B]} from `start_step` on."""
    spec = data_spec(config)
    if _reads_synthetic(config):
        yield from synthetic.train_iterator(
            config.seed, start_step, batch_size=batch_size, image_size=config.image_size,
            num_classes=spec.num_classes, channels=spec.channels, num_views=num_views,
            sharding=parallel.batch_sharded(mesh))
        return
    from genscl_jax.data import tf_pipeline  # The TensorFlow boundary: only here and in eval_batches.

    local = tf_pipeline.create_train_iterator(
        dataset=config.dataset, data_dir=config.data_dir or None, global_batch_size=batch_size,
        image_size=config.image_size, policy=augment, num_views=num_views, seed=config.seed,
        start_step=start_step, device_color_augment=config.device_color_augment and augment == "simclr",
        channels=spec.channels)
    for batch in local:
        yield parallel.global_batch_from_local(batch, mesh)


def eval_batches(config: Any, mesh: Mesh, *, split: str = "test") -> Iterator[dict[str, jax.Array]]:
    """One pass over an evaluation split, {"image": [B, H, W, C], "label", "mask"}; padding has mask False."""
    spec = data_spec(config)
    if _reads_synthetic(config):
        # Its own seeds per split, so the "train" and "test" examples differ.
        seed = config.seed + (1_000_003 if split == "test" else 2_000_003)
        yield from synthetic.eval_batches(
            seed, num_examples=synthetic.EVAL_EXAMPLES, batch_size=config.eval_batch_size,
            image_size=config.image_size, num_classes=spec.num_classes, channels=spec.channels,
            sharding=parallel.batch_sharded(mesh))
        return
    from genscl_jax.data import tf_pipeline  # The TensorFlow boundary (see train_batches).

    local = tf_pipeline.create_eval_iterator(
        dataset=config.dataset, data_dir=config.data_dir or None, global_batch_size=config.eval_batch_size,
        image_size=config.image_size, split=split, channels=spec.channels)
    for batch in local:
        yield parallel.global_batch_from_local(batch, mesh)
