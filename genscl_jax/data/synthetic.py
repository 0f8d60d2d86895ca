"""A synthetic image classification task generated on the accelerator. No TensorFlow anywhere on this path.

Each class has a fixed smooth random template; an example is its class template plus noise, and each view adds
its own noise and a random horizontal flip. It is learnable (the loss falls), deterministic in (seed, step), and
costs no host input work, so the train step can be run and timed on any machine.

Its images are uint8 like every dataset's (the steps normalise them with the dataset's statistics): the standardised
values x are stored as pixels 255 * (mean + std * x), with the registry's mean and std, so normalising gives x back
to within the 8-bit step (1 / 32 of a standard deviation, against a noise of 0.5).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from genscl_jax.data import registry
from genscl_jax.runtime import compile_options

# Its class count and the size of an "epoch" are in genscl_jax.data.registry.
# kNN and linear evaluation on synthetic data read this many examples of each split (it is only a smoke test).
EVAL_EXAMPLES = 2048


def _class_templates(num_classes: int, image_size: int, channels: int) -> jax.Array:
    # Coarse 4x4 random patterns upsampled: smooth, so crops/convs of tiny models can still tell them apart.
    coarse = jax.random.normal(jax.random.PRNGKey(1234), (num_classes, 4, 4, channels))
    return jax.image.resize(coarse, (num_classes, image_size, image_size, channels), "linear")


def _train_batch(key, *, batch_size, image_size, channels, num_classes, num_views, noise):
    label_key, base_key, view_key, flip_key = jax.random.split(key, 4)
    labels = jax.random.randint(label_key, (batch_size,), 0, num_classes)
    examples = _class_templates(num_classes, image_size, channels)[labels]
    base = examples + noise * jax.random.normal(base_key, examples.shape)
    return _views_of(base, labels, view_key, flip_key, num_views=num_views, noise=noise)


# A selection of the training split (config.train_subset) draws from a fixed set of examples: position i has class
# i % num_classes and its own noise keyed by i under this key, the same in every run whatever its seed.
_POSITIONS_KEY = 4321


def position_labels(num_examples: int, num_classes: int):
    """The classes of the training split's first `num_examples` positions (numpy, for a selection)."""
    return np.arange(num_examples, dtype=np.int64) % num_classes


def _positions_batch(key, positions, *, image_size, channels, num_classes, num_views, noise):
    """The views of the examples at `positions` [B] (the selection's, drawn for this step)."""
    view_key, flip_key = jax.random.split(key)
    labels = positions % num_classes
    noise_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(_POSITIONS_KEY), i))(positions)
    examples = _class_templates(num_classes, image_size, channels)[labels]
    base = examples + noise * jax.vmap(lambda k: jax.random.normal(k, examples.shape[1:]))(noise_keys)
    return _views_of(base, labels, view_key, flip_key, num_views=num_views, noise=noise)


def _views_of(base, labels, view_key, flip_key, *, num_views, noise):
    batch_size = base.shape[0]
    views = base[:, None] + 0.5 * noise * jax.random.normal(view_key, (batch_size, num_views) + base.shape[1:])
    flip = jax.random.bernoulli(flip_key, 0.5, (batch_size, num_views, 1, 1, 1))
    views = jnp.where(flip, views[:, :, :, ::-1], views)
    return {"image": _as_pixels(views), "label": labels.astype(jnp.int32)}


def _as_pixels(standardised: jax.Array) -> jax.Array:
    """Standardised values -> uint8 pixels that the dataset's statistics normalise back to them."""
    info = registry.DATASETS["synthetic"].info
    pixels = 255.0 * (info.mean[0] + info.std[0] * standardised)
    return jnp.clip(jnp.round(pixels), 0, 255).astype(jnp.uint8)


@functools.lru_cache(maxsize=None)
def _compiled_generator(sharding, **static):
    # Generated directly in its final layout: with a batch sharding each device makes only its own rows, which is
    # also what lets several processes share one global synthetic batch.
    # Elementwise work only: compiled cheaply (see runtime/compile_options.py), as fast, compiled in a fraction.
    out_shardings = None if sharding is None else {"image": sharding, "label": sharding}
    return compile_options.compile_cheaply(functools.partial(_train_batch, **static), jax.random.PRNGKey(0),
                                         out_shardings=out_shardings)


def train_batch(seed: int, step: int, *, batch_size: int, image_size: int, num_classes: int, channels: int = 3,
                num_views: int = 2, noise: float = 0.5, sharding=None):
    """The global training batch of `step`: {"image": [B, V, H, W, C], "label": [B]}, laid out by `sharding`."""
    generate = _compiled_generator(sharding, batch_size=batch_size, image_size=image_size, channels=channels,
                                   num_classes=num_classes, num_views=num_views, noise=noise)
    return generate(jax.random.fold_in(jax.random.PRNGKey(seed), step))


def train_iterator(seed: int, start_step: int = 0, selection=None, **kwargs):
    """Global training batches from `start_step` on; with a selection (a subset.Selection of positions) its examples,
    every epoch in a (seed, epoch)-permuted order, batches running on across epoch boundaries."""
    step = start_step
    while True:
        if selection is None:
            yield train_batch(seed, step, **kwargs)
        else:
            yield selection_batch(seed, step, selection.keys, **kwargs)
        step += 1


def selection_batch(seed: int, step: int, positions, *, batch_size: int, image_size: int, num_classes: int,
                    channels: int = 3, num_views: int = 2, noise: float = 0.5, sharding=None):
    """The training batch of `step` drawn from the selection's `positions`: example j of the batch is number
    (step * batch_size + j) of the endless stream of epochs, each a (seed, epoch) permutation of the selection."""
    stream = step * batch_size + jnp.arange(batch_size)
    epochs, within = jnp.divmod(stream, len(positions))
    order = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(seed), e),
                                                      len(positions)))(epochs)
    chosen = jnp.asarray(positions)[jnp.take_along_axis(order, within[:, None], axis=1)[:, 0]]
    generate = _compiled_positions(sharding, image_size=image_size, channels=channels, num_classes=num_classes,
                                   num_views=num_views, noise=noise)
    return generate(jax.random.fold_in(jax.random.PRNGKey(seed), step), chosen)


@functools.lru_cache(maxsize=None)
def _compiled_positions(sharding, **static):
    out_shardings = None if sharding is None else {"image": sharding, "label": sharding}
    return jax.jit(functools.partial(_positions_batch, **static), out_shardings=out_shardings)


def selection_eval_batches(positions, *, batch_size: int, image_size: int, num_classes: int, channels: int = 3,
                           noise: float = 0.5, sharding=None):
    """The selection's examples (one fixed view of each), in padded batches {"image", "label", "mask"}."""
    generate = _compiled_positions(sharding, image_size=image_size, channels=channels, num_classes=num_classes,
                                   num_views=1, noise=noise)
    for start in range(0, len(positions), batch_size):
        chunk = jnp.asarray(positions[start:start + batch_size])
        padded = jnp.pad(chunk, (0, batch_size - len(chunk)))
        batch = generate(jax.random.PRNGKey(0), padded)
        yield _as_eval_batch(batch, len(chunk))


def eval_batches(seed: int, *, num_examples: int, batch_size: int, image_size: int, num_classes: int,
                 channels: int = 3, noise: float = 0.5, sharding=None):
    """A fixed evaluation set, in padded batches {"image": [B, H, W, C], "label", "mask"}."""
    for start in range(0, num_examples, batch_size):
        batch = train_batch(seed, start // batch_size, batch_size=batch_size, image_size=image_size,
                            channels=channels, num_classes=num_classes, num_views=1, noise=noise,
                            sharding=sharding)
        yield _as_eval_batch(batch, num_examples - start)


@jax.jit
def _as_eval_batch(batch, num_valid):
    mask = jnp.arange(batch["label"].shape[0]) < num_valid
    return {"image": batch["image"][:, 0], "label": batch["label"], "mask": mask}
