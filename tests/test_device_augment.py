"""On-device colour augmentation in JAX."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genscl_jax.data import device_augment

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)

# Compiled, as the train step uses it (and far faster than op-by-op dispatch of the vmapped switches).
color_augment = functools.partial(jax.jit, static_argnames=(
    "mean", "std", "jitter_strength", "jitter_prob", "grayscale_prob"))(device_augment.color_augment)


def images(shape=(3, 2, 8, 8, 3), seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), shape)


def unnormalise(x, mean=MEAN, std=STD):
    return np.asarray(x) * np.array(std) + np.array(mean)


def test_shape_dtype_and_range_under_jit():
    x = images()
    augment = jax.jit(lambda rng, x: device_augment.color_augment(rng, x, mean=MEAN, std=STD))
    out = augment(jax.random.PRNGKey(1), x)
    assert out.shape == x.shape and out.dtype == jnp.float32
    restored = unnormalise(out)
    assert restored.min() >= -1e-5 and restored.max() <= 1 + 1e-5
    np.testing.assert_array_equal(out, augment(jax.random.PRNGKey(1), x))
    assert not np.allclose(out, augment(jax.random.PRNGKey(2), x))


def test_every_image_gets_its_own_randomness():
    one = images((1, 1, 8, 8, 3))
    x = jnp.broadcast_to(one, (4, 2, 8, 8, 3))
    out = np.asarray(color_augment(jax.random.PRNGKey(0), x, mean=MEAN, std=STD,
                                                  jitter_prob=1.0, grayscale_prob=0.0))
    flat = out.reshape(8, -1)
    for i in range(8):
        for j in range(i + 1, 8):
            assert not np.allclose(flat[i], flat[j]), (i, j)


def test_zero_probabilities_are_plain_normalisation():
    x = images()
    out = color_augment(jax.random.PRNGKey(0), x, mean=MEAN, std=STD, jitter_prob=0.0,
                                       grayscale_prob=0.0)
    np.testing.assert_allclose(out, (np.asarray(x) - np.array(MEAN)) / np.array(STD), rtol=1e-6, atol=1e-6)


def test_grayscale_with_probability_one_has_equal_channels():
    x = images()
    out = color_augment(jax.random.PRNGKey(0), x, mean=(0.5,) * 3, std=(0.25,) * 3,
                                       jitter_prob=0.0, grayscale_prob=1.0)
    out = np.asarray(out)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    luma = np.asarray(x) @ np.array(device_augment.GRAY_WEIGHTS, np.float32)
    np.testing.assert_allclose(out[..., 0] * 0.25 + 0.5, luma, atol=1e-5)


def test_one_channel_images():
    x = images((4, 8, 8, 1))
    out = np.asarray(color_augment(jax.random.PRNGKey(0), x, mean=(0.286,), std=(0.353,),
                                                  jitter_prob=1.0))
    assert out.shape == x.shape
    assert not np.allclose(out[0], (np.asarray(x[0]) - 0.286) / 0.353)
    with pytest.raises(ValueError, match="channels"):
        device_augment.color_augment(jax.random.PRNGKey(0), images((2, 8, 8, 2)), mean=(0.5,) * 2,
                                     std=(0.5,) * 2)


def test_hsv_round_trip():
    x = np.asarray(images((16, 16, 3)))
    np.testing.assert_allclose(device_augment.hsv_to_rgb(device_augment.rgb_to_hsv(x)), x, atol=2e-6)
    np.testing.assert_allclose(device_augment._hue(x, 1.0), x, atol=2e-6)  # A full turn changes nothing.


def test_device_ops_match_the_host_ops():
    tf = pytest.importorskip("tensorflow")
    from genscl_jax.data import augment

    x = np.asarray(images((16, 16, 3)))
    pairs = [(device_augment._brightness, augment.adjust_brightness, 1.3),
             (device_augment._contrast, augment.adjust_contrast, 0.7),
             (device_augment._saturation, augment.adjust_saturation, 1.4),
             (device_augment._hue, augment.adjust_hue, 0.08),
             (device_augment._hue, augment.adjust_hue, -0.1)]
    for device_op, host_op, factor in pairs:
        np.testing.assert_allclose(device_op(x, factor), host_op(tf.constant(x), factor).numpy(), atol=2e-6)
