"""RandAugment and AutoAugment as stateless TensorFlow ops, on one op table.

The table (OPS) holds every op once, under torchvision's names, as fn(image, magnitude) with the magnitude in
torchvision's units and sign: degrees (positive turns counter-clockwise), pixels (positive moves the content right /
down), shear factors, enhance factors as 1 + magnitude, posterize bits, solarize thresholds on the 0-1 scale.
RandAugment and AutoAugment differ only in how they choose ops and magnitudes.

The fill convention, one for both: geometric ops warp as torchvision's functional ops do by default, nearest
neighbour with black fill (the torchvision ops that the PyTorch code of GenSCL and SupContrast run). Images are
float32 [0, 1], [H, W, C] with C = 1 or 3.
"""

from __future__ import annotations

import math

import tensorflow as tf

from genscl_jax.data.augment_color import (adjust_brightness, adjust_contrast, adjust_saturation, blend,
                                           channel_count)
from genscl_jax.data.augment_geometry import split_seed, uniform

FILL = 0.0  # black, torchvision's fill=None
INTERPOLATION = "NEAREST"  # torchvision's InterpolationMode.NEAREST, its default for these ops


def _projective_transform(image, transform):
    """Maps output pixel (x, y) to input ((a0 x + a1 y + a2), (b0 x + b1 y + b2)); FILL outside the image."""
    transform = tf.concat([tf.cast(transform, tf.float32), tf.zeros([2])], axis=0)[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=FILL, interpolation=INTERPOLATION, fill_mode="CONSTANT")
    return out[0]


def _rotate(image, degrees):
    """Clockwise by `degrees` about the image centre."""
    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    cos, sin = tf.cos(degrees * math.pi / 180), tf.sin(degrees * math.pi / 180)
    return _projective_transform(image, tf.stack([cos, sin, cx - cos * cx - sin * cy,
                                                  -sin, cos, cy + sin * cx - cos * cy]))


def _shear(image, amount, axis: int):
    """x += amount * y (axis 1) or y += amount * x (axis 0), about the image's top-left corner as torchvision."""
    zero, one = tf.constant(0.0), tf.constant(1.0)
    amount = tf.cast(amount, tf.float32)
    # The corner is half a pixel before pixel 0's centre.
    rows = ([one, amount, amount / 2, zero, one, zero] if axis == 1
            else [one, zero, zero, amount, one, amount / 2])
    return _projective_transform(image, tf.stack(rows))


def _shift(image, pixels, axis: int):
    """Moves the content by -pixels along x (axis 1) or y (axis 0)."""
    zero, one = tf.constant(0.0), tf.constant(1.0)
    pixels = tf.cast(pixels, tf.float32)
    rows = [one, zero, pixels, zero, one, zero] if axis == 1 else [one, zero, zero, zero, one, pixels]
    return _projective_transform(image, tf.stack(rows))


def _solarize(image, threshold):
    """PIL/torchvision solarize: invert every value at or above `threshold` (0-1 scale)."""
    return tf.where(image >= threshold, 1.0 - image, image)


def _auto_contrast(image):
    low = tf.reduce_min(image, axis=[0, 1])
    high = tf.reduce_max(image, axis=[0, 1])
    scale = tf.where(high > low, 1.0 / tf.maximum(high - low, 1e-6), 1.0)
    offset = tf.where(high > low, low, 0.0)
    return tf.clip_by_value((image - offset) * scale, 0.0, 1.0)


def _equalize_channel(channel):
    """PIL ImageOps.equalize on one channel of 0-255 ints (the tensorflow/tpu reference algorithm)."""
    histogram = tf.math.bincount(channel, minlength=256, maxlength=256)
    last_nonzero = tf.gather(histogram, tf.reduce_max(tf.where(histogram > 0)))
    step = (tf.reduce_sum(histogram) - last_nonzero) // 255
    lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    return tf.where(step == 0, channel, tf.gather(lut, channel))


def _equalize(image):
    levels = tf.cast(tf.round(image * 255.0), tf.int32)
    channels = [_equalize_channel(levels[..., c]) for c in range(channel_count(image))]
    return tf.cast(tf.stack(channels, axis=-1), tf.float32) / 255.0


def _posterize(image, bits: int):
    shift = 8 - bits
    levels = tf.cast(tf.round(image * 255.0), tf.int32)
    return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(levels, shift), shift), tf.float32) / 255.0


def _sharpness(image, factor):
    """PIL ImageEnhance.Sharpness: blend with a 3x3 smoothed image whose 1-px border is the original."""
    channels = channel_count(image)
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    inside = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]]) > 0
    degenerate = tf.where(inside, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return blend(degenerate, image, factor)


# The one op table: name -> fn(image, magnitude), magnitudes in torchvision's units and directions (module doc).
OPS = {
    "Identity": lambda img, m: img,
    "ShearX": lambda img, m: _shear(img, m, axis=1),
    "ShearY": lambda img, m: _shear(img, m, axis=0),
    "TranslateX": lambda img, m: _shift(img, -m, axis=1),
    "TranslateY": lambda img, m: _shift(img, -m, axis=0),
    "Rotate": lambda img, m: _rotate(img, -m),
    "Brightness": lambda img, m: adjust_brightness(img, 1.0 + m),
    "Color": lambda img, m: adjust_saturation(img, 1.0 + m),
    "Contrast": lambda img, m: adjust_contrast(img, 1.0 + m),
    "Sharpness": lambda img, m: _sharpness(img, 1.0 + m),
    "Posterize": lambda img, m: _posterize(img, int(m)),
    "Solarize": lambda img, m: _solarize(img, m),
    "AutoContrast": lambda img, m: _auto_contrast(img),
    "Equalize": lambda img, m: _equalize(img),
    "Invert": lambda img, m: 1.0 - img,
}
# The ops without a direction.
_UNSIGNED = ("Identity", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")


# ----------------------------------------------------------------------------------------------------------
# RandAugment (Cubuk et al. 2020): `num_layers` ops drawn uniformly from the list below, each at magnitude
# `magnitude` out of 10. Strength grows with the magnitude for every op (timm's "increasing" ranges); ops with a
# direction get a random sign.

_MAX_LEVEL = 10.0


def _rand_augment_ops(magnitude: float):
    """The op list, in drawing order: name -> fn(image, signed), `signed` +1 or -1 (ignored by unsigned ops)."""
    level = magnitude / _MAX_LEVEL

    # The signed ops' sign is drawn uniformly, so the direction is a convention; these keep the draws' meaning of
    # before the one op table (positive: clockwise, content moved left / up).
    def translate(axis: int):  # 0.45 of the side, in pixels
        return lambda img, s: OPS["TranslateX" if axis == 1 else "TranslateY"](
            img, -0.45 * level * s * tf.cast(tf.shape(img)[axis], tf.float32))

    return {
        "Identity": lambda img, s: OPS["Identity"](img, 0.0),
        "AutoContrast": lambda img, s: OPS["AutoContrast"](img, 0.0),
        "Equalize": lambda img, s: OPS["Equalize"](img, 0.0),
        "Rotate": lambda img, s: OPS["Rotate"](img, -30.0 * level * s),
        "Solarize": lambda img, s: OPS["Solarize"](img, 1.0 - level),
        "Posterize": lambda img, s: OPS["Posterize"](img, 8 - int(4 * level)),
        "Color": lambda img, s: OPS["Color"](img, 0.9 * level * s),
        "Contrast": lambda img, s: OPS["Contrast"](img, 0.9 * level * s),
        "Brightness": lambda img, s: OPS["Brightness"](img, 0.9 * level * s),
        "Sharpness": lambda img, s: OPS["Sharpness"](img, 0.9 * level * s),
        "ShearX": lambda img, s: OPS["ShearX"](img, 0.3 * level * s),
        "ShearY": lambda img, s: OPS["ShearY"](img, 0.3 * level * s),
        "TranslateX": translate(axis=1),
        "TranslateY": translate(axis=0),
    }


def rand_augment(image, seed, num_layers: int = 2, magnitude: float = 9.0):
    """RandAugment on a float32 [0, 1] image: `num_layers` uniformly drawn ops, each at `magnitude`."""
    ops = list(_rand_augment_ops(magnitude).values())
    for layer_seed in split_seed(seed, num_layers):
        op_seed, sign_seed = split_seed(layer_seed, 2)
        op_index = tf.random.stateless_uniform([], op_seed, 0, len(ops), dtype=tf.int32)
        signed = tf.where(uniform(sign_seed) < 0.5, -1.0, 1.0)
        branches = [lambda op=op, img=image, s=signed: tf.ensure_shape(op(img, s), img.shape) for op in ops]
        image = tf.switch_case(op_index, branches)
    return image


# ----------------------------------------------------------------------------------------------------------
# AutoAugment (Cubuk et al. 2019), ImageNet policy: per image one of 25 sub-policies, chosen uniformly; each
# sub-policy is two (op, probability, magnitude bin) steps, every step applied with its own probability. This is
# torchvision's AutoAugment(AutoAugmentPolicy.IMAGENET): its table, its 10 magnitude bins, a random sign per
# step for signed ops. SupCon's TF code ran tf-models' AutoAugment "v0" policy instead, a different table; the
# PyTorch code GenSCL and SupContrast ship runs torchvision's.

AUTO_AUGMENT_IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)

_AUTO_AUGMENT_BINS = 10

def auto_augment_magnitude(name: str, magnitude_bin, height: int, width: int) -> tuple[float, bool]:
    """(magnitude, signed) of op `name` at `magnitude_bin` (0-9), as torchvision's _augmentation_space has it.

    Pixel units where torchvision uses them: translations in pixels, Solarize's threshold on the 0-255 scale.
    """
    level = (magnitude_bin or 0) / (_AUTO_AUGMENT_BINS - 1)  # linspace(lo, hi, 10)[bin] = lo + (hi - lo) * level
    table = {
        "ShearX": (0.3 * level, True), "ShearY": (0.3 * level, True),
        "TranslateX": (150.0 / 331.0 * width * level, True), "TranslateY": (150.0 / 331.0 * height * level, True),
        "Rotate": (30.0 * level, True),
        "Brightness": (0.9 * level, True), "Color": (0.9 * level, True),
        "Contrast": (0.9 * level, True), "Sharpness": (0.9 * level, True),
        "Posterize": (float(8 - round(4 * level)), False),
        "Solarize": (255.0 * (1.0 - level), False),
        "AutoContrast": (0.0, False), "Equalize": (0.0, False), "Invert": (0.0, False),
    }
    if name not in table:
        raise ValueError(f"unknown AutoAugment op {name!r}; expected one of {sorted(table)}")
    return table[name]


def _auto_augment_op(name: str, magnitude: float):
    """fn(image, sign) applying op `name` of OPS at `magnitude` (auto_augment_magnitude's units); sign (+1 / -1)
    flips the signed ops. torchvision truncates translations to whole pixels."""
    if name in ("TranslateX", "TranslateY"):
        magnitude = float(int(magnitude))
    elif name == "Solarize":
        magnitude = magnitude / 255.0
    op = OPS[name]
    if name in _UNSIGNED:  # a Python magnitude: posterize's bits must be static
        return lambda img, s: op(img, magnitude)
    return lambda img, s: op(img, magnitude * s)


def auto_augment(image, seed, policy=AUTO_AUGMENT_IMAGENET_POLICY):
    """AutoAugment on a float32 [0, 1] image with a static height and width (the crop is resized first)."""
    height, width = image.shape[0], image.shape[1]
    if height is None or width is None:
        raise ValueError(f"auto_augment needs a static image size, got shape {image.shape}")
    steps = sorted({(name, magnitude_bin) for sub_policy in policy for name, _, magnitude_bin in sub_policy},
                   key=str)
    step_index = {step: i for i, step in enumerate(steps)}
    ops = [_auto_augment_op(name, auto_augment_magnitude(name, magnitude_bin, height, width)[0])
           for name, magnitude_bin in steps]
    signed = tf.constant([auto_augment_magnitude(name, b, height, width)[1] for name, b in steps])
    choice_seed, prob_seed, sign_seed = split_seed(seed, 3)
    choice = tf.random.stateless_uniform([], choice_seed, 0, len(policy), dtype=tf.int32)
    draws = uniform(prob_seed, shape=[2])
    signs = tf.where(uniform(sign_seed, shape=[2]) < 0.5, -1.0, 1.0)
    for position in range(2):
        op_index = tf.gather([step_index[(name, b)] for name, _, b in (sub[position] for sub in policy)], choice)
        prob = tf.gather([p for _, p, _ in (sub[position] for sub in policy)], choice)
        sign = tf.where(tf.gather(signed, op_index), signs[position], 1.0)
        branches = [lambda op=op, img=image, s=sign: tf.ensure_shape(op(img, s), img.shape) for op in ops]
        # torchvision applies a step when its uniform draw is <= the step's probability.
        image = tf.cond(draws[position] <= prob, lambda b=branches, i=op_index: tf.switch_case(i, b),
                        lambda img=image: img)
    return image
