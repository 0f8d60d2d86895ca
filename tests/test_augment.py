"""Stateless TF augmentations: ranges, determinism, and what each colour / RandAugment op does."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from genscl_jax.data import augment, augment_color, augment_geometry, augment_policies, registry, views  # noqa: E402,E501


def random_image(shape=(40, 48, 3), seed=0):
    return tf.random.stateless_uniform(shape, seed=[seed, 1])


def test_crop_window_respects_scale_and_ratio():
    height, width = 64, 64
    for index in range(150):
        offset, size = augment_geometry.random_resized_crop_window(tf.constant([index, 7]), (height, width, 3),
                                                          scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
        (y, x), (h, w) = offset.numpy(), size.numpy()
        assert 0 <= y and 0 <= x and y + h <= height and x + w <= width
        area = h * w / (height * width)
        assert 0.2 - 0.02 <= area <= 1.0
        # Integer rounding of a 64 px side moves the ratio by at most one pixel.
        assert 3 / 4 * (h - 1) / h - 1e-6 <= w / h <= 4 / 3 * (h + 1) / h + 1e-6


def test_crop_scale_bounds_change_the_sampled_areas():
    def areas(scale):
        sizes = [augment_geometry.random_resized_crop_window(tf.constant([i, 3]), (64, 64, 3), scale=scale)[1].numpy()
                 for i in range(40)]
        return np.array([h * w / 64 ** 2 for h, w in sizes])
    small, large = areas((0.05, 0.1)), areas((0.8, 1.0))
    assert small.max() <= 0.12 and large.min() >= 0.78


def plan(policy, image_size=32):
    """`policy`'s plan for ImageNet-like photos (simclr blurs them) at `image_size` px."""
    return views.resolve(policy, registry.get("imagenet2012"), image_size=image_size)


@pytest.mark.parametrize("policy", [p for p in views.POLICIES if p != "none"])
def test_views_dtype_range_and_determinism(policy):
    image = random_image()
    made = augment.augment_views(image, tf.constant([1, 2]), 2, plan(policy))
    again = augment.augment_views(image, tf.constant([1, 2]), 2, plan(policy))
    other = augment.augment_views(image, tf.constant([1, 3]), 2, plan(policy))
    assert made.shape == (2, 32, 32, 3) and made.dtype == tf.uint8  # Views leave the host as uint8.
    np.testing.assert_array_equal(made.numpy(), again.numpy())  # Stateless: same seed, same views.
    assert not np.array_equal(made[0].numpy(), made[1].numpy())  # The two views of one image differ.
    assert not np.array_equal(made.numpy(), other.numpy())
    with pytest.raises(ValueError, match="evaluation view"):
        augment.augment_view(image, tf.constant([1, 2]), plan("none"))


def test_uint8_input_and_one_channel():
    image = tf.cast(random_image((30, 30, 3)) * 255, tf.uint8)
    view = augment.augment_view(image, tf.constant([0, 1]), plan("simclr", 24))
    assert view.dtype == tf.uint8 and int(tf.reduce_max(view)) > 128
    gray = random_image((28, 28, 1))
    for policy in ("simclr", "randaugment"):  # Saturation, hue and grayscale are skipped, not an error.
        made = augment.augment_views(gray, tf.constant([4, 5]), 2, plan(policy))
        assert made.shape == (2, 32, 32, 1)
    padded = augment_geometry.pad_or_resize(tf.cast(gray * 255, tf.uint8), 32)
    assert padded.shape == (32, 32, 1) and float(tf.reduce_max(padded[:2])) == 0.0


def test_color_jitter_identity_and_grayscale():
    image = random_image()
    unchanged = augment_color.color_jitter(image, tf.constant([0, 0]), strength=(0.0, 0.0, 0.0, 0.0))
    np.testing.assert_allclose(unchanged.numpy(), image.numpy(), atol=2e-6)
    changed = augment_color.random_color_jitter(image, tf.constant([0, 1]), prob=1.0)
    assert not np.allclose(changed.numpy(), image.numpy())
    gray = augment_color.random_grayscale(image, tf.constant([0, 2]), prob=1.0).numpy()
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    np.testing.assert_allclose(augment_color.random_grayscale(image, tf.constant([0, 2]), prob=0.0).numpy(),
                               image.numpy(), atol=1e-6)


def test_color_ops_match_their_definitions():
    image = random_image().numpy()
    luma = image @ np.array(views.GRAY_WEIGHTS, np.float32)
    np.testing.assert_allclose(augment_color.adjust_saturation(tf.constant(image), 0.0).numpy(),
                               np.repeat(luma[..., None], 3, -1), atol=1e-6)
    np.testing.assert_allclose(augment_color.adjust_contrast(tf.constant(image), 0.0).numpy(),
                               np.full_like(image, luma.mean()), atol=1e-6)
    np.testing.assert_allclose(augment_color.adjust_brightness(tf.constant(image), 0.5).numpy(), image * 0.5, atol=1e-6)


def test_gaussian_blur_smooths_and_keeps_constants():
    constant = tf.fill([32, 32, 3], 0.3)
    np.testing.assert_allclose(augment_color.gaussian_blur(constant, 1.5, 7).numpy(), 0.3, atol=1e-6)
    noise = random_image((32, 32, 3))
    blurred = augment_color.gaussian_blur(noise, 1.5, 7)
    assert blurred.shape == noise.shape
    assert float(tf.math.reduce_std(blurred)) < 0.5 * float(tf.math.reduce_std(noise))


@pytest.mark.parametrize("channels", [1, 3])
def test_every_rand_augment_op_keeps_shape_and_range(channels):
    image = random_image((24, 24, channels))
    changed = 0
    for name, op in augment_policies._rand_augment_ops(9.0).items():
        for sign in (-1.0, 1.0):
            out = op(image, tf.constant(sign))
            assert out.shape == image.shape and out.dtype == tf.float32, name
            assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0, name
        changed += not np.allclose(out.numpy(), image.numpy())
    assert changed >= 11  # All but identity (and colour on one channel) really transform.


def test_equalize_spreads_a_narrow_histogram():
    narrow = 0.4 + 0.2 * random_image((16, 16, 3))
    equalized = augment_policies._equalize(narrow)
    assert float(tf.reduce_max(equalized) - tf.reduce_min(equalized)) > 0.8


def test_rand_augment_applies_two_random_ops():
    image = random_image((24, 24, 3))
    outputs = [augment_policies.rand_augment(image, tf.constant([i, 0])).numpy() for i in range(6)]
    assert sum(not np.allclose(out, image.numpy()) for out in outputs) >= 4
    assert not np.allclose(outputs[0], outputs[1])


# ----------------------------------------------------------------------------------------------------------
# torchvision as the oracle: RandomResizedCrop.get_params and AutoAugment(AutoAugmentPolicy.IMAGENET).


def crop_windows(image_shape, seeds, scale):
    """[N, 4] (y, x, h, w) windows, one per seed, sampled in one graph (eager calls would take minutes)."""
    @tf.function
    def sample(seed_batch):
        def one(seed):
            offset, size = augment_geometry.random_resized_crop_window(seed, image_shape, scale)
            return tf.concat([offset, size], 0)
        return tf.map_fn(one, seed_batch, fn_output_signature=tf.int32)
    return sample(tf.constant(seeds, tf.int64)).numpy()


def test_crop_window_distribution_matches_torchvision():
    torch = pytest.importorskip("torch")
    transforms = pytest.importorskip("torchvision.transforms")
    count, side = 20000, 32
    windows = crop_windows((side, side, 3), [[i, 11] for i in range(count)], (0.2, 1.0))
    y, x, h, w = windows.T
    assert np.all((y >= 0) & (x >= 0) & (h > 0) & (w > 0) & (y + h <= side) & (x + w <= side))
    torch.manual_seed(0)
    image = torch.zeros(3, side, side)
    reference = np.array([transforms.RandomResizedCrop.get_params(image, [0.2, 1.0], [3 / 4, 4 / 3])
                          for _ in range(count)])
    # Means of 20000 draws: standard error ~0.002 on the area, so 0.01 separates samplers (tf's box sampler: 0.05).
    area, reference_area = h * w / side ** 2, reference[:, 2] * reference[:, 3] / side ** 2
    assert abs(area.mean() - reference_area.mean()) < 0.01
    assert abs(np.log(w / h).mean() - np.log(reference[:, 3] / reference[:, 2]).mean()) < 0.01
    # Offsets are uniform over the room left: centred on average, as torchvision's.
    assert abs((y + h / 2).mean() - (reference[:, 0] + reference[:, 2] / 2).mean()) < 0.2


@pytest.mark.parametrize("height, width", [(20, 60), (60, 20), (30, 32)])
def test_crop_window_falls_back_to_torchvision_centre_crop(height, width):
    torch = pytest.importorskip("torch")
    transforms = pytest.importorskip("torchvision.transforms")
    # An area range above the whole image: no try fits, so the window is torchvision's deterministic fallback.
    offset, size = augment_geometry.random_resized_crop_window(tf.constant([3, 4]), (height, width, 3),
                                                               scale=(2.0, 3.0))
    reference = transforms.RandomResizedCrop.get_params(torch.zeros(3, height, width), [2.0, 3.0], [3 / 4, 4 / 3])
    assert (*offset.numpy(), *size.numpy()) == reference


def torchvision_auto_augment():
    autoaugment = pytest.importorskip("torchvision.transforms.autoaugment")
    return autoaugment, autoaugment.AutoAugment(autoaugment.AutoAugmentPolicy.IMAGENET)


def test_auto_augment_policy_and_magnitudes_match_torchvision():
    autoaugment, reference = torchvision_auto_augment()
    assert augment_policies.AUTO_AUGMENT_IMAGENET_POLICY == tuple(
        tuple(tuple(step) for step in sub_policy)
        for sub_policy in reference._get_policies(autoaugment.AutoAugmentPolicy.IMAGENET))
    height, width = 24, 40
    for name, (magnitudes, signed) in reference._augmentation_space(10, (height, width)).items():
        for magnitude_bin in range(10):
            expected = float(magnitudes[magnitude_bin] if magnitudes.ndim else magnitudes)
            assert augment_policies.auto_augment_magnitude(name, magnitude_bin, height, width) == pytest.approx(
                (expected, signed), rel=1e-5, abs=1e-6), (name, magnitude_bin)


OP_NAMES = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness",
            "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")


@pytest.mark.parametrize("name", OP_NAMES)
def test_auto_augment_ops_match_torchvision(name):
    torch = pytest.importorskip("torch")
    autoaugment, reference = torchvision_auto_augment()
    rng = np.random.default_rng(0)
    pixels = rng.integers(30, 220, size=(24, 24, 3), dtype=np.uint8)
    pixels[:4] = rng.integers(0, 256, size=(4, 24, 3))  # A few extremes, so AutoContrast has work to do.
    image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    magnitudes, signed = reference._augmentation_space(10, (24, 24))[name]
    for magnitude_bin in (3, 8):
        for sign in ((1.0, -1.0) if signed else (1.0,)):
            magnitude = float(magnitudes[magnitude_bin]) if magnitudes.ndim else 0.0
            expected = autoaugment._apply_op(image, name, sign * magnitude, autoaugment.InterpolationMode.NEAREST,
                                             None).permute(1, 2, 0).numpy().astype(np.float32)
            ours = augment_policies._auto_augment_op(
                name, augment_policies.auto_augment_magnitude(name, magnitude_bin, 24, 24)[0])
            out = ours(tf.constant(pixels, tf.float32) / 255, tf.constant(sign)).numpy() * 255
            # torchvision truncates its uint8 results (and its uint8 gray image before blending); ours stay float.
            np.testing.assert_allclose(out, expected, atol=2.0, err_msg=f"{name} bin {magnitude_bin} sign {sign}")


def test_auto_augment_is_deterministic_in_range_and_seed_dependent():
    image = random_image((24, 24, 3))
    outputs = [augment_policies.auto_augment(image, tf.constant([i, 5])).numpy() for i in range(8)]
    np.testing.assert_array_equal(outputs[0], augment_policies.auto_augment(image, tf.constant([0, 5])).numpy())
    assert all(0.0 <= out.min() and out.max() <= 1.0 for out in outputs)
    assert len({out.tobytes() for out in outputs}) >= 5  # Different seeds, different sub-policies and draws.


def test_auto_augment_picks_sub_policies_uniformly_and_steps_with_their_probability():
    image = random_image((16, 16, 3))
    # Three sub-policies whose results are told apart; the second step of the first fires half of the time.
    policy = ((("Invert", 1.0, None), ("Posterize", 0.5, 9)), (("Solarize", 1.0, 4), ("Invert", 0.0, None)),
              (("Rotate", 1.0, 9), ("Equalize", 0.0, None)))
    invert, solarize = 1.0 - image.numpy(), augment_policies._solarize(image, 5 / 9).numpy()  # Bin 4: 255 * 5/9.
    posterized = augment_policies._posterize(1.0 - image, 4).numpy()
    rotations = [augment_policies._auto_augment_op("Rotate", 30.0)(image, tf.constant(s)).numpy() for s in (1.0, -1.0)]
    counts = {"invert": 0, "invert+posterize": 0, "solarize": 0, "rotate+": 0, "rotate-": 0}
    for i in range(240):
        out = augment_policies.auto_augment(image, tf.constant([i, 9]), policy=policy).numpy()
        candidates = {"invert": invert, "invert+posterize": posterized, "solarize": solarize,
                      "rotate+": rotations[0], "rotate-": rotations[1]}
        matches = [name for name, candidate in candidates.items() if np.allclose(out, candidate, atol=1e-6)]
        assert len(matches) == 1, matches
        counts[matches[0]] += 1
    # 80 expected per sub-policy (sd ~7.3); the 50% step and the random sign split theirs ~40/40 (sd ~4.5).
    assert all(55 <= counts[a] + counts[b] <= 105 for a, b in (("invert", "invert+posterize"),
                                                                ("rotate+", "rotate-")))
    assert 55 <= counts["solarize"] <= 105
    assert all(22 <= counts[name] <= 58 for name in ("invert", "invert+posterize", "rotate+", "rotate-"))
