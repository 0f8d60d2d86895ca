"""On-device colour augmentation in JAX."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genscl_jax.data import device_augment

# Compiled, as the train step uses it (and far faster than op-by-op dispatch of the vmapped switches).
augment = functools.partial(jax.jit, static_argnames=(
    "color", "blur_prob", "jitter_strength", "jitter_prob", "grayscale_prob"))(device_augment.augment)


def images(shape=(3, 2, 8, 8, 3), seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), shape)


def test_shape_dtype_and_range_under_jit():
    x = images()
    out = augment(jax.random.PRNGKey(1), x)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    np.testing.assert_array_equal(out, augment(jax.random.PRNGKey(1), x))
    assert not np.allclose(out, augment(jax.random.PRNGKey(2), x))


def test_every_image_gets_its_own_randomness():
    one = images((1, 1, 8, 8, 3))
    x = jnp.broadcast_to(one, (4, 2, 8, 8, 3))
    out = np.asarray(augment(jax.random.PRNGKey(0), x, jitter_prob=1.0, grayscale_prob=0.0))
    flat = out.reshape(8, -1)
    for i in range(8):
        for j in range(i + 1, 8):
            assert not np.allclose(flat[i], flat[j]), (i, j)


def test_zero_probabilities_change_nothing():
    x = images()
    out = augment(jax.random.PRNGKey(0), x, jitter_prob=0.0, grayscale_prob=0.0)
    np.testing.assert_array_equal(out, x)


def test_grayscale_with_probability_one_has_equal_channels():
    x = images()
    out = np.asarray(augment(jax.random.PRNGKey(0), x, jitter_prob=0.0, grayscale_prob=1.0))
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    luma = np.asarray(x) @ np.array(device_augment.GRAY_WEIGHTS, np.float32)
    np.testing.assert_allclose(out[..., 0], luma, atol=1e-6)


def test_one_channel_images():
    x = images((4, 8, 8, 1))
    out = np.asarray(augment(jax.random.PRNGKey(0), x, jitter_prob=1.0))
    assert out.shape == x.shape
    assert not np.allclose(out[0], np.asarray(x[0]))
    with pytest.raises(ValueError, match="channels"):
        device_augment.augment(jax.random.PRNGKey(0), images((2, 8, 8, 2)))


def test_blur_is_applied_with_its_probability_and_only_to_large_views():
    x = images((400, 1, 48, 48, 3))  # 5-tap kernel at 48 px
    out = np.asarray(augment(jax.random.PRNGKey(3), x, color=False, blur_prob=0.5)).reshape(400, -1)
    blurred = ~np.all(out == np.asarray(x).reshape(400, -1), axis=1)
    assert abs(blurred.mean() - 0.5) < 3 * np.sqrt(0.25 / 400), blurred.mean()
    # A blur smooths: less pixel-to-pixel variation than the input (noise images).
    assert np.abs(np.diff(out[blurred].reshape(-1, 48, 48, 3), axis=1)).mean() < np.abs(np.diff(
        np.asarray(x)[:, 0], axis=1)).mean()
    small = images((8, 1, 16, 16, 3))  # a 1-tap kernel: no blur at all, as on the host
    np.testing.assert_array_equal(augment(jax.random.PRNGKey(0), small, color=False, blur_prob=1.0), small)


def test_hsv_round_trip():
    x = np.asarray(images((16, 16, 3)))
    np.testing.assert_allclose(device_augment.hsv_to_rgb(device_augment.rgb_to_hsv(x)), x, atol=2e-6)
    np.testing.assert_allclose(device_augment._hue(x, 1.0), x, atol=2e-6)  # A full turn changes nothing.


def test_device_ops_match_the_host_ops():
    tf = pytest.importorskip("tensorflow")
    from genscl_jax.data import augment_color

    x = np.asarray(images((16, 16, 3)))
    pairs = [(device_augment._brightness, augment_color.adjust_brightness, 1.3),
             (device_augment._contrast, augment_color.adjust_contrast, 0.7),
             (device_augment._saturation, augment_color.adjust_saturation, 1.4),
             (device_augment._hue, augment_color.adjust_hue, 0.08),
             (device_augment._hue, augment_color.adjust_hue, -0.1)]
    for device_op, host_op, factor in pairs:
        np.testing.assert_allclose(device_op(x, factor), host_op(tf.constant(x), factor).numpy(), atol=2e-6)


@pytest.mark.parametrize("sigma, side", [(0.1, 224), (0.7, 64), (2.0, 224), (1.3, 41)])
def test_device_blur_matches_the_host_blur(sigma, side):
    tf = pytest.importorskip("tensorflow")
    from genscl_jax.data import augment_color as host, views

    x = np.asarray(images((side, side, 3), seed=side))
    kernel_size = views.blur_kernel_size(side)
    device = device_augment.gaussian_blur(jnp.asarray(x), jnp.float32(sigma), kernel_size)
    np.testing.assert_allclose(device, host.gaussian_blur(tf.constant(x), sigma, kernel_size).numpy(), atol=2e-6)
