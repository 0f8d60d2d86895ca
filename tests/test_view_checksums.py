"""The views a seed gives, pinned: the figures below were taken on the code before the view plan (issue 31) and must
not move when augmentation is reorganised. A change here is a change of the training data.

Host views: the training preprocessing of one example (decoded or encoded, per dataset) for several policies, with
colour on the host or on the device; device: the step's finishing of such views (colour, blur, normalisation) from a
fixed key. The images are made here from fixed seeds; JPEG encoding is libjpeg's, deterministic for one TensorFlow.

Bit for bit holds on one CPU, not across them: TensorFlow's float ops (the blur's convolution, the colour jitter)
round differently with another instruction set, and a few pixels of a uint8 view then move by one. So each case is
pinned twice: the exact checksums (taken on an Intel Xeon; PINNED, kept as the record of the refactor, compared only
as information) and a fingerprint that rounding cannot move but any change of the data does (FINGERPRINTS: per view,
each channel's sum and the image's first moments along both axes, within what 1% of its pixels moved by one step
can change). The fingerprints were taken on an AMD EPYC, where 9 of the 10 cases reproduce the exact checksums, and
the tenth (ImageNet simclr, colour and blur on the host) differs from its pin only in such rounding.
"""

import hashlib
import json
import os

import jax
import numpy as np
import pytest

from genscl_jax.data import device_preprocess, registry, views

tf = pytest.importorskip("tensorflow")

from genscl_jax.data import tf_pipeline  # noqa: E402

CIFAR, IMAGENET = registry.get("cifar10"), registry.get("imagenet2012")


def checksum(array) -> str:
    array = np.ascontiguousarray(np.asarray(array))
    return hashlib.sha256(array.dtype.str.encode() + str(array.shape).encode() + array.tobytes()).hexdigest()[:16]


def photo(seed: int, shape) -> tf.Tensor:
    """A smooth random colour image with fine noise, uint8."""
    coarse = tf.random.stateless_uniform([1, shape[0] // 8, shape[1] // 8, 3], seed=[seed, 0])
    image = tf.image.resize(coarse, shape[:2], method="bicubic")[0]
    image += 0.05 * tf.random.stateless_normal(shape, seed=[seed, 1])
    return tf.cast(tf.clip_by_value(image, 0.0, 1.0) * 255 + 0.5, tf.uint8)


def example(entry, index: int):
    """One pipeline example as the readers give it: CIFAR decoded 32 px, ImageNet an encoded 90x120 JPEG."""
    if entry.stored_as_jpeg:
        image = tf.io.encode_jpeg(photo(index, (90, 120, 3)), quality=90)
    else:
        image = photo(index, (32, 32, 3))
    return {"image": image, "label": tf.constant(index % 10, tf.int64), "key": tf.constant(1000 + index, tf.int64),
            "epoch": tf.constant(index % 3, tf.int64)}


# The crop scale the configs give: ImageNet's linear evaluation (crop_flip) takes torchvision's default, as
# configs/imagenet_resnet50.py sets it (before the view plan, a rule in tf_pipeline did).
CROP_SCALES = {("imagenet2012", "crop_flip"): (0.08, 1.0)}


def host_views(entry, policy: str, *, image_size: int, device_color: bool, num_views: int = 2):
    """The uint8 views [E, V, S, S, C] of twelve examples (RandAugment and AutoAugment draw most of their ops), and
    what the step must do to them."""
    crop_scale = CROP_SCALES.get((entry.tfds_name, policy), (0.2, 1.0))
    plan = views.resolve(policy, entry, image_size=image_size, crop_scale=crop_scale, device_color_augment=device_color)
    preprocess = tf_pipeline.make_train_preprocess(entry, plan=plan, num_views=num_views, seed=7, channels=None)
    made = np.stack([preprocess(example(entry, index))["image"].numpy() for index in range(12)])
    return made, device_preprocess.for_plan(plan, entry.info)


# Compiled as the steps compile it. The device's floats depend on XLA's flags: these are the suite's (conftest).
finish_views = jax.jit(device_preprocess.train_views, static_argnums=2)

# (dataset, policy, image size, colour on the device) -> (host views' checksum, the step's input's checksum).
PINNED = {
    ('cifar10', 'simclr', 32, False): ('0037f4c1f24d151f', '2a6ec6e21d3f127c'),
    ('cifar10', 'simclr', 32, True): ('0cfcf28dc9ce869c', '515292f9febd1efa'),
    ('cifar10', 'crop_flip', 32, False): ('0cfcf28dc9ce869c', '4d79aeda00daf429'),
    # RandAugment's geometric ops moved to the one fill convention of augment_policies (nearest, black fill; was
    # bilinear, mid-grey): ('394fe2bf0a1850a2', 'aef536e9b4a27c82') before, and again with the old convention.
    ('cifar10', 'randaugment', 32, False): ('81faeeb61fb35ef9', '6e3c7fb4d31818ce'),
    ('cifar10', 'autoaugment', 32, False): ('e33d9e71c08f7579', '02fe49dc7a73997c'),
    ('cifar10', 'none', 32, False): ('44e76a9b62d2416b', '184ba5f6d9433bf8'),
    ('imagenet2012', 'simclr', 64, False): ('42c1b351b73768b0', 'f0994fbdc4ad49c9'),
    ('imagenet2012', 'simclr', 64, True): ('03bc6396d8dc3129', 'ddbae4aad8b898b6'),
    ('imagenet2012', 'crop_flip', 48, False): ('d20a23496d7d7ebe', 'fe4fa9ec77844552'),
    ('imagenet2012', 'none', 48, False): ('7a3620189aa3bf65', 'b5d79db4a40dca00'),
}


# (dataset, policy, image size, colour on the device) as "cifar10-simclr-32-False" -> {"host": [E][V][C + 2],
# "device": [E][V][C + 2]} (fingerprint), from tests/view_fingerprints.json.
with open(os.path.join(os.path.dirname(__file__), "view_fingerprints.json")) as f:
    FINGERPRINTS = json.load(f)

# The share of a view's pixels that float rounding on another CPU may move by one step: 10 times what a test of the
# float pipeline against the uint8 one sees (test_device_preprocess), still far below what any change of the data moves.
ROUNDING_SHARE = 0.01


def fingerprint(views) -> np.ndarray:
    """[E, V, C + 2] of views [E, V, S, S, C]: each channel's sum, then the sum of every value weighted by its row's
    and by its column's offset from the centre (a flip, a shifted crop or a channel change moves these)."""
    values = np.asarray(views, np.float64)
    offsets = np.arange(values.shape[2]) - (values.shape[2] - 1) / 2
    sums = values.sum(axis=(2, 3))
    rows = np.einsum("evhwc,h->ev", values, offsets)[..., None]
    columns = np.einsum("evhwc,w->ev", values, np.arange(values.shape[3]) - (values.shape[3] - 1) / 2)[..., None]
    return np.concatenate([sums, rows, columns], axis=-1)


def rounding_tolerance(views, step: float) -> np.ndarray:
    """How far ROUNDING_SHARE of each view's pixels moved by `step` can move each fingerprint entry."""
    _, _, height, width, channels = np.shape(views)
    moved = ROUNDING_SHARE * height * width * step
    return np.array([moved] * channels + [moved * channels * height / 2, moved * channels * width / 2])


def case_id(case) -> str:
    return "-".join(map(str, case))


@pytest.mark.parametrize("case", list(PINNED), ids=case_id)
def test_views_are_the_pinned_ones(case):
    name, policy, image_size, device_color = case
    made, preprocessing = host_views(registry.get(name), policy, image_size=image_size, device_color=device_color)
    network_input = finish_views(jax.random.PRNGKey(11), made, preprocessing)
    pinned = FINGERPRINTS[case_id(case)]
    assert pinned["checksums"] == list(PINNED[case]) or case == ("imagenet2012", "simclr", 64, False)
    # One uint8 step on the host; on the device, one step normalised (divided by the smallest std).
    device_step = 1 / 255 / min(registry.get(name).info.std)
    for made_here, key, step in ((made, "host", 1.0), (network_input, "device", device_step)):
        moved = np.abs(fingerprint(made_here) - np.array(pinned[key]))
        assert np.all(moved <= rounding_tolerance(made_here, step) + 1e-3), (key, moved.max())
    if (checksum(made), checksum(network_input)) != PINNED[case]:  # say so, without failing: see the docstring
        print(f"{case_id(case)}: not bit for bit the pinned views on this CPU, within float rounding of them")


def test_the_fingerprint_tells_a_changed_view_from_rounding():
    """What the pin catches: a flip, a one-pixel shift or a 1% brightness change of one view, not 0.1% of its
    pixels moved by one step."""
    made, _ = host_views(CIFAR, "crop_flip", image_size=32, device_color=False)
    tolerance = rounding_tolerance(made, 1.0)

    def moved(changed):
        return np.any(np.abs(fingerprint(changed) - fingerprint(made)) > tolerance)

    rounded = made.astype(int).copy()
    flat = rounded.reshape(-1)
    flat[np.random.default_rng(0).choice(flat.size, flat.size // 1000, replace=False)] += 1
    assert not moved(rounded)
    for change in (lambda v: v[:, :, ::-1], lambda v: np.roll(v, 1, axis=2), lambda v: v * 1.01):
        changed = made.astype(float).copy()
        changed[0, 0] = change(changed[0:1, 0:1])[0, 0]
        assert moved(changed)
