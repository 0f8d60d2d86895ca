"""Stateless TF augmentations: ranges, determinism, and what each colour / RandAugment op does."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from genscl_jax import augment  # noqa: E402


def random_image(shape=(40, 48, 3), seed=0):
    return tf.random.stateless_uniform(shape, seed=[seed, 1])


def test_crop_window_respects_scale_and_ratio():
    height, width = 64, 64
    for index in range(150):
        offset, size = augment.random_resized_crop_window(tf.constant([index, 7]), (height, width, 3),
                                                          scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
        (y, x), (h, w) = offset.numpy(), size.numpy()
        assert 0 <= y and 0 <= x and y + h <= height and x + w <= width
        area = h * w / (height * width)
        assert 0.2 - 0.02 <= area <= 1.0
        # Integer rounding of a 64 px side moves the ratio by at most one pixel.
        assert 3 / 4 * (h - 1) / h - 1e-6 <= w / h <= 4 / 3 * (h + 1) / h + 1e-6


def test_crop_scale_bounds_change_the_sampled_areas():
    def areas(scale):
        sizes = [augment.random_resized_crop_window(tf.constant([i, 3]), (64, 64, 3), scale=scale)[1].numpy()
                 for i in range(40)]
        return np.array([h * w / 64 ** 2 for h, w in sizes])
    small, large = areas((0.05, 0.1)), areas((0.8, 1.0))
    assert small.max() <= 0.12 and large.min() >= 0.78


@pytest.mark.parametrize("policy", augment.POLICIES)
def test_views_dtype_range_and_determinism(policy):
    image = random_image()
    views = augment.augment_views(image, tf.constant([1, 2]), 2, policy=policy, image_size=32, blur_prob=0.5)
    again = augment.augment_views(image, tf.constant([1, 2]), 2, policy=policy, image_size=32, blur_prob=0.5)
    other = augment.augment_views(image, tf.constant([1, 3]), 2, policy=policy, image_size=32, blur_prob=0.5)
    assert views.shape == (2, 32, 32, 3) and views.dtype == tf.float32
    assert float(tf.reduce_min(views)) >= 0.0 and float(tf.reduce_max(views)) <= 1.0
    np.testing.assert_array_equal(views.numpy(), again.numpy())  # Stateless: same seed, same views.
    if policy == "none":
        np.testing.assert_array_equal(views[0].numpy(), views[1].numpy())
    else:
        assert not np.allclose(views[0].numpy(), views[1].numpy())  # The two views of one image differ.
        assert not np.allclose(views.numpy(), other.numpy())


def test_uint8_input_and_one_channel():
    image = tf.cast(random_image((30, 30, 3)) * 255, tf.uint8)
    view = augment.augment_view(image, tf.constant([0, 1]), policy="simclr", image_size=24)
    assert view.dtype == tf.float32 and float(tf.reduce_max(view)) <= 1.0 and float(tf.reduce_max(view)) > 0.5
    gray = random_image((28, 28, 1))
    for policy in ("simclr", "randaugment"):  # Saturation, hue and grayscale are skipped, not an error.
        views = augment.augment_views(gray, tf.constant([4, 5]), 2, policy=policy, image_size=32)
        assert views.shape == (2, 32, 32, 1)
    padded = augment.pad_or_resize(tf.cast(gray * 255, tf.uint8), 32)
    assert padded.shape == (32, 32, 1) and float(tf.reduce_max(padded[:2])) == 0.0


def test_color_jitter_identity_and_grayscale():
    image = random_image()
    unchanged = augment.color_jitter(image, tf.constant([0, 0]), strength=(0.0, 0.0, 0.0, 0.0))
    np.testing.assert_allclose(unchanged.numpy(), image.numpy(), atol=2e-6)
    changed = augment.random_color_jitter(image, tf.constant([0, 1]), prob=1.0)
    assert not np.allclose(changed.numpy(), image.numpy())
    gray = augment.random_grayscale(image, tf.constant([0, 2]), prob=1.0).numpy()
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    np.testing.assert_allclose(augment.random_grayscale(image, tf.constant([0, 2]), prob=0.0).numpy(),
                               image.numpy(), atol=1e-6)


def test_color_ops_match_their_definitions():
    image = random_image().numpy()
    luma = image @ np.array(augment.GRAY_WEIGHTS, np.float32)
    np.testing.assert_allclose(augment.adjust_saturation(tf.constant(image), 0.0).numpy(),
                               np.repeat(luma[..., None], 3, -1), atol=1e-6)
    np.testing.assert_allclose(augment.adjust_contrast(tf.constant(image), 0.0).numpy(),
                               np.full_like(image, luma.mean()), atol=1e-6)
    np.testing.assert_allclose(augment.adjust_brightness(tf.constant(image), 0.5).numpy(), image * 0.5, atol=1e-6)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    np.testing.assert_allclose(augment.normalize(tf.constant(image), mean, std).numpy(),
                               (image - np.array(mean)) / np.array(std), atol=1e-5)


def test_gaussian_blur_smooths_and_keeps_constants():
    constant = tf.fill([32, 32, 3], 0.3)
    np.testing.assert_allclose(augment.gaussian_blur(constant, 1.5, 7).numpy(), 0.3, atol=1e-6)
    noise = random_image((32, 32, 3))
    blurred = augment.gaussian_blur(noise, 1.5, 7)
    assert blurred.shape == noise.shape
    assert float(tf.math.reduce_std(blurred)) < 0.5 * float(tf.math.reduce_std(noise))


@pytest.mark.parametrize("channels", [1, 3])
def test_every_rand_augment_op_keeps_shape_and_range(channels):
    image = random_image((24, 24, channels))
    changed = 0
    for name, op in augment._rand_augment_ops(9.0).items():
        for sign in (-1.0, 1.0):
            out = op(image, tf.constant(sign))
            assert out.shape == image.shape and out.dtype == tf.float32, name
            assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0, name
        changed += not np.allclose(out.numpy(), image.numpy())
    assert changed >= 11  # All but identity (and colour on one channel) really transform.


def test_equalize_spreads_a_narrow_histogram():
    narrow = 0.4 + 0.2 * random_image((16, 16, 3))
    equalized = augment._equalize(narrow)
    assert float(tf.reduce_max(equalized) - tf.reduce_min(equalized)) > 0.8


def test_rand_augment_applies_two_random_ops():
    image = random_image((24, 24, 3))
    outputs = [augment.rand_augment(image, tf.constant([i, 0])).numpy() for i in range(6)]
    assert sum(not np.allclose(out, image.numpy()) for out in outputs) >= 4
    assert not np.allclose(outputs[0], outputs[1])
