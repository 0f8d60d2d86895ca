"""Views leave the host as uint8 and the step finishes them: same crops and flips as the float pipeline had, colour
and blur from the same distributions whether the host or the device applies them, normalisation on the device."""

import functools

import jax
import numpy as np
import pytest

from genscl_jax.data import device_preprocess, registry, views

tf = pytest.importorskip("tensorflow")

from genscl_jax.data import augment, augment_color, augment_geometry  # noqa: E402

IMAGENET = registry.get("imagenet2012")


def photo(seed, shape=(60, 80, 3)):
    """A smooth random colour image with fine noise, uint8 (colour ops act on structure, not only on noise)."""
    coarse = tf.random.stateless_uniform([1, shape[0] // 8, shape[1] // 8, 3], seed=[seed, 0])
    image = tf.image.resize(coarse, shape[:2], method="bicubic")[0]
    image += 0.05 * tf.random.stateless_normal(shape, seed=[seed, 1])
    return tf.cast(tf.clip_by_value(image, 0.0, 1.0) * 255 + 0.5, tf.uint8)


def float_pipeline_view(image, seed, image_size, *, color=False, blur_prob=0.0, crop_scale=(0.2, 1.0)):
    """One view as the pipeline made it before views left the host as uint8: augment_view's sub-seeds and ops, the
    crop cast to float32 and resized, every op in float32 [0, 1]."""
    crop_seed, flip_seed, jitter_seed, gray_seed, blur_seed, _ = augment_geometry.split_seed(seed, 6)
    crop = tf.cast(augment_geometry.random_crop(image, crop_seed, crop_scale), tf.float32)
    view = tf.clip_by_value(tf.image.resize(crop, [image_size, image_size], antialias=False) / 255.0, 0.0, 1.0)
    view = augment_geometry.random_flip(view, flip_seed)
    if color:
        view = augment_color.random_grayscale(augment_color.random_color_jitter(view, jitter_seed), gray_seed)
    if blur_prob:
        view = augment_color.random_gaussian_blur(view, blur_seed, blur_prob)
    return view


def test_normalize_is_the_dataset_statistics_on_the_0_1_scale():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    prep = device_preprocess.Preprocessing.of(IMAGENET.info)
    expected = (pixels / 255.0 - np.array(IMAGENET.info.mean)) / np.array(IMAGENET.info.std)
    np.testing.assert_allclose(device_preprocess.normalize(pixels, prep), expected, rtol=1e-5, atol=1e-5)
    views = np.stack([pixels, pixels[::-1]], axis=1)  # [B, V, H, W, C]: no augmentation, only normalisation
    np.testing.assert_allclose(device_preprocess.train_views(jax.random.PRNGKey(0), views, prep)[:, 0],
                               expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="1 channels but the statistics"):
        device_preprocess.normalize(pixels[..., :1], prep)


def device_share(entry, policy, image_size=224, **plan_options):
    plan = views.resolve(policy, entry, image_size=image_size, **plan_options)
    return device_preprocess.for_plan(plan, IMAGENET.info)


def test_what_the_host_leaves_to_the_device():
    info = IMAGENET.info
    assert device_share(IMAGENET, "simclr", device_color_augment=True) == device_preprocess.Preprocessing(
        info.mean, info.std, color=views.ColorJitter(), blur_prob=0.5)
    # CIFAR-sized views are never blurred; other policies' ops stay on the host; without the flag only normalising.
    assert device_share(registry.get("cifar10"), "simclr", device_color_augment=True).blur_prob == 0.0
    for policy, device in (("autoaugment", True), ("crop_flip", True), ("simclr", False)):
        assert device_share(IMAGENET, policy, device_color_augment=device) == device_preprocess.Preprocessing.of(info)
    # The config's jitter reaches the device as it reaches the host.
    weak = views.ColorJitter(strength=(0.1, 0.1, 0.1, 0.0), prob=0.5, grayscale_prob=0.0)
    assert device_share(IMAGENET, "simclr", color=weak, device_color_augment=True).color == weak


@pytest.mark.parametrize("image_size, crop_scale", [(32, (0.2, 1.0)), (224, (0.08, 1.0))])
def test_uint8_views_have_the_float_pipelines_crops_and_flips(image_size, crop_scale):
    """Crop + flip (simclr with colour on the device, crop_flip): the float pipeline's pixels, quantised once."""
    for index in range(12):
        image, seed = photo(index), tf.constant([index, 5])
        plan = views.resolve("crop_flip", IMAGENET, image_size=image_size, crop_scale=crop_scale)
        new = augment.augment_view(image, seed, plan)
        old = float_pipeline_view(image, seed, image_size, crop_scale=crop_scale)
        assert new.dtype == tf.uint8
        # Rounded half up, like every view; a 1 only where float rounding decides an exact half.
        difference = np.abs(new.numpy().astype(int) - augment_geometry.to_uint8(old).numpy().astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3, (index, (difference > 0).mean())


def test_host_colour_views_are_the_float_pipelines_quantised():
    for index in range(8):
        image, seed = photo(index), tf.constant([index, 9])
        new = augment.augment_view(image, seed, views.resolve("simclr", IMAGENET, image_size=48))
        old = float_pipeline_view(image, seed, 48, color=True, blur_prob=0.5)
        np.testing.assert_array_equal(new.numpy(), augment_geometry.to_uint8(old).numpy())


def _view_statistics(images):
    """Per view [N, H, W, 3] in [0, 1]: brightness, contrast, colourfulness, grayscale or not, sharpness."""
    luma = images @ np.array(views.GRAY_WEIGHTS)
    return {"brightness": images.mean(axis=(1, 2, 3)), "contrast": luma.std(axis=(1, 2)),
            "colourfulness": (images.max(-1) - images.min(-1)).mean(axis=(1, 2)),
            "gray": np.all(np.abs(images - images[..., :1]) < 2 / 255, axis=(1, 2, 3)).astype(float),
            "sharpness": np.abs(np.diff(luma, axis=2)).mean(axis=(1, 2))}


def _ks_statistic(a, b):
    values = np.sort(np.concatenate([a, b]))
    return np.max(np.abs(np.searchsorted(np.sort(a), values, "right") / len(a)
                         - np.searchsorted(np.sort(b), values, "right") / len(b)))


def test_device_colour_and_blur_have_the_host_distribution():
    """The same 480 crops (64 px: a 7-tap blur) coloured and blurred by the host (float ops, as before) and by the
    device (the host's uint8 crop + flip, then device_augment): every per-view statistic has the same distribution
    (two-sample Kolmogorov-Smirnov at the 0.001 level), and differs clearly from no colour augmentation at all."""
    count, size = 480, 64
    host, crops = [], []
    plan = views.resolve("simclr", IMAGENET, image_size=size, device_color_augment=True)

    @tf.function  # traced once: eager ops one by one made this test the fast tier's slowest
    def host_and_crop(image, seed):
        host_view = float_pipeline_view(image, seed, size, color=True, blur_prob=0.5)
        return augment_geometry.to_uint8(host_view), augment.augment_view(image, seed, plan)

    photos = [photo(index, (72, 96, 3)) for index in range(60)]
    for index in range(count):
        host_view, crop = host_and_crop(photos[index % 60], tf.constant([index, 11]))
        host.append(host_view.numpy())
        crops.append(crop.numpy())
    prep = device_preprocess.for_plan(plan, IMAGENET.info)
    assert prep.color is not None and prep.blur_prob == 0.5
    finish = jax.jit(functools.partial(device_preprocess.train_views, preprocessing=prep))
    normalised = np.asarray(finish(jax.random.PRNGKey(0), np.stack(crops)[:, None]))[:, 0]
    # Compared at the host's 8-bit precision (a gray view's colourfulness is then 0 on both sides).
    device = np.floor(np.clip(normalised * np.array(IMAGENET.info.std) + np.array(IMAGENET.info.mean), 0, 1) * 255
                      + 0.5) / 255
    host_stats = _view_statistics(np.stack(host) / 255.0)
    device_stats, plain_stats = _view_statistics(device), _view_statistics(np.stack(crops) / 255.0)
    critical = 1.95 * np.sqrt(2 / count)  # KS at alpha = 0.001 for two samples of `count`
    for name in host_stats:
        assert _ks_statistic(host_stats[name], device_stats[name]) < critical, (name, critical)
    assert abs(device_stats["gray"].mean() - host_stats["gray"].mean()) < 0.06
    for name in ("contrast", "colourfulness", "sharpness"):  # the test can tell augmented views from plain ones
        assert _ks_statistic(plain_stats[name], device_stats[name]) > 2 * critical, name
