"""Image augmentations as stateless TensorFlow ops, for the tf.data input pipeline.

Every random op takes an explicit `seed` (an int [2] tensor, as tf.random.stateless_* expect) and derives
sub-seeds with tf.random.experimental.stateless_split, so one example's views depend only on the seed the
pipeline gives it, derived from (run seed, epoch, example). That is what makes a resumed run see the same
data as an uninterrupted one.

Decoded images are uint8; the ops in between work on float32 in [0, 1] unless said otherwise, shape [H, W, C]
with C = 1 or 3; the colour ops that need three channels (saturation, hue, grayscale) are skipped for one-channel
images. Every view leaves as uint8 (augment_view); normalisation is the device's (device_preprocess).

Colour semantics follow torchvision's ColorJitter (the authors' code is PyTorch): brightness multiplies,
contrast and saturation blend with the grayscale mean / grayscale image, hue rotates in HSV, the four are
applied in a random order, every result is clipped to [0, 1]. genscl_jax.data.device_augment implements the
same maths in JAX for the accelerator.

Importing this module imports TensorFlow; only genscl_jax.data.tf_pipeline imports it (see genscl_jax.data).
"""

from __future__ import annotations

import math

import tensorflow as tf

from genscl_jax.data.registry import BLUR_SIGMA, GRAY_WEIGHTS, POLICIES, blur_kernel_size


def split_seed(seed, num: int):
    """`num` independent int64 [2] seeds from one (a stateless split: same input, same outputs)."""
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num))


def _uniform(seed, minval=0.0, maxval=1.0, shape=()):
    return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval)


# ----------------------------------------------------------------------------------------------------------
# Geometry: random resized crop, flip, resize/pad.


_CROP_TRIES = 10  # torchvision's RandomResizedCrop.get_params


def random_resized_crop_window(seed, image_shape, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """Samples a crop (offset [y, x], size [h, w], int32) as torchvision's RandomResizedCrop.get_params does.

    Ten tries of (area uniform in `scale` x image area, aspect ratio log-uniform in `ratio`, sides rounded);
    the first that fits the image wins, at a uniform offset; if none fits, a centre crop as large as the image
    allows with its aspect clamped to `ratio`. The tries are drawn together (stateless, from `seed`).
    tf's sample_distorted_bounding_box, used before, samples differently (mean area 0.50 instead of 0.55 on
    32 px at scale (0.2, 1)), which is why it is not used.
    """
    shape = tf.convert_to_tensor(image_shape)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    area_seed, ratio_seed, offset_seed = split_seed(seed, 3)
    target_area = height * width * _uniform(area_seed, scale[0], scale[1], shape=[_CROP_TRIES])
    aspect = tf.exp(_uniform(ratio_seed, math.log(ratio[0]), math.log(ratio[1]), shape=[_CROP_TRIES]))
    tries_w = tf.round(tf.sqrt(target_area * aspect))  # Round half to even, as Python's round().
    tries_h = tf.round(tf.sqrt(target_area / aspect))
    fits = (tries_w > 0) & (tries_w <= width) & (tries_h > 0) & (tries_h <= height)
    first = tf.minimum(tf.reduce_min(tf.where(fits, tf.range(_CROP_TRIES), _CROP_TRIES)), _CROP_TRIES - 1)
    found = tf.reduce_any(fits)
    fallback_h, fallback_w = _centre_crop_size(height, width, ratio)
    h = tf.where(found, tries_h[first], fallback_h)
    w = tf.where(found, tries_w[first], fallback_w)
    # Uniform integer offsets in [0, side - crop] when found (torch.randint), centred otherwise.
    u = _uniform(offset_seed, shape=[2])
    y = tf.where(found, tf.floor(u[0] * (height - h + 1)), tf.floor((height - h) / 2))
    x = tf.where(found, tf.floor(u[1] * (width - w + 1)), tf.floor((width - w) / 2))
    offset = tf.cast(tf.stack([tf.minimum(y, height - h), tf.minimum(x, width - w)]), tf.int32)
    return offset, tf.cast(tf.stack([h, w]), tf.int32)


def _centre_crop_size(height, width, ratio):
    """torchvision's fallback: the whole image, cut to the nearest allowed aspect ratio."""
    in_ratio = width / height
    too_tall, too_wide = in_ratio < min(ratio), in_ratio > max(ratio)
    h = tf.where(too_tall, tf.round(width / min(ratio)), height)
    w = tf.where(too_wide, tf.round(height * max(ratio)), width)
    return h, w


def to_uint8(image):
    """float32 [0, 1] -> uint8 [0, 255], rounded half up: the one quantisation of a view that leaves the host."""
    return tf.cast(tf.clip_by_value(image, 0.0, 1.0) * 255.0 + 0.5, tf.uint8)


def as_uint8(image):
    """A decoded image as uint8: uint8 stays, float [0, 1] is quantised (to_uint8)."""
    return image if image.dtype == tf.uint8 else to_uint8(image)


def resize(image, size: int, antialias: bool = True):
    """Square bilinear resize of a uint8 or float [0, 1] image to float32 [0, 1].

    antialias (like PIL in torchvision) matters when downscaling; it costs ~10x a plain bilinear resize,
    so training crops leave it out, as TF's SimCLR and big_vision's inception crop do. The kernels read uint8
    themselves: no float copy of the input.
    """
    scale = 255.0 if image.dtype == tf.uint8 else 1.0
    resized = tf.image.resize(image, [size, size], method="bilinear", antialias=antialias)
    return tf.clip_by_value(resized / scale, 0.0, 1.0)


def resize_to_uint8(image, size: int):
    """uint8 -> uint8 square bilinear resize (no antialias), never leaving the 0-255 scale.

    The pixels of to_uint8(resize(image, size, antialias=False)) (to float rounding at exact halves) without that
    path's division, clipping and scaling passes: bilinear weights are convex, so there is nothing to clip.
    """
    resized = tf.image.resize(image, [size, size], method="bilinear", antialias=False)
    return tf.cast(resized + 0.5, tf.uint8)


def random_crop(image, seed, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """The window of torchvision's RandomResizedCrop (random_resized_crop_window), cut out; the input's dtype."""
    offset, crop_size = random_resized_crop_window(seed, tf.shape(image), scale, ratio)
    crop = tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([crop_size, [-1]], 0))
    crop.set_shape([None, None, image.shape[-1]])  # tf.slice forgets the (static) channel count.
    return crop


def random_resized_crop(image, seed, size: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision RandomResizedCrop: crop a random window, resize it to size x size. float32 [0, 1]."""
    return resize(random_crop(image, seed, scale, ratio), size, antialias=False)


def random_flip(image, seed):
    return tf.image.stateless_random_flip_left_right(image, seed=seed)


def pad_or_resize(image, size: int):
    """Small uint8 images (Fashion-MNIST 28 px) to uint8 at `size`: zero-pad when it is 4 px larger, resize
    otherwise.

    Padding keeps the original pixels (the usual 28 -> 32 for CIFAR-shaped networks); the background of
    Fashion-MNIST is black, so zero padding adds no edge.
    """
    image = as_uint8(image)
    height = image.shape[0]
    if height == size:
        return image
    if height is not None and size - height == 4:
        return tf.pad(image, [[2, 2], [2, 2], [0, 0]])
    return to_uint8(resize(image, size))


# ----------------------------------------------------------------------------------------------------------
# Colour: torchvision-style jitter in random order, grayscale, Gaussian blur.


def _channels(image) -> int:
    """The static channel count; colour ops branch on it in Python, so it must be known."""
    channels = image.shape[-1]
    if channels not in (1, 3):
        raise ValueError(f"expected a static channel count of 1 or 3, got image shape {image.shape}")
    return channels


# TF's CPU kernels for per-channel broadcasting ([H, W, 3] op [3] or [H, W, 1]) are several times slower
# than a [H*W, 3] x [3, 3] matmul, so the RGB colour ops below are written as 3x3 colour matrices.


def _color_matrix(image, matrix):
    """Each output channel c = sum_k image[..., k] * matrix[k, c]."""
    return tf.tensordot(image, tf.cast(matrix, image.dtype), axes=1)


def _gray_matrix():
    """[3, 3] with every column the luma weights: image @ it = three equal luma channels."""
    return tf.tile(tf.constant(GRAY_WEIGHTS, tf.float32)[:, None], [1, 3])


def grayscale(image):
    """Luma, keeping the channel count (three equal channels for RGB)."""
    if _channels(image) == 1:
        return image
    return _color_matrix(image, _gray_matrix())


def blend(degenerate, image, factor):
    """PIL ImageEnhance / torchvision _blend: factor 0 -> degenerate, 1 -> image, clipped to [0, 1]."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 1.0)


def adjust_brightness(image, factor):
    return tf.clip_by_value(image * factor, 0.0, 1.0)


def adjust_contrast(image, factor):
    """Blend with the mean luma (a scalar: the luma of the mean colour, the same by linearity)."""
    mean_color = tf.reduce_mean(image, axis=[0, 1])
    mean = mean_color[0] if _channels(image) == 1 else tf.tensordot(mean_color, GRAY_WEIGHTS, axes=1)
    return tf.clip_by_value(factor * image + (1.0 - factor) * mean, 0.0, 1.0)


def adjust_saturation(image, factor):
    """Blend with the luma image: the colour matrix factor * I + (1 - factor) * gray."""
    if _channels(image) == 1:
        return image
    matrix = factor * tf.eye(3) + (1.0 - factor) * _gray_matrix()
    return tf.clip_by_value(_color_matrix(image, matrix), 0.0, 1.0)


def adjust_hue(image, delta):
    return tf.clip_by_value(tf.image.adjust_hue(image, delta), 0.0, 1.0)


def color_jitter(image, seed, strength=(0.4, 0.4, 0.4, 0.1)):
    """Brightness, contrast, saturation, hue with torchvision's ranges, applied in a random order."""
    brightness, contrast, saturation, hue = strength
    seeds = split_seed(seed, 5)
    factors = [_uniform(seeds[0], max(0.0, 1 - brightness), 1 + brightness),
               _uniform(seeds[1], max(0.0, 1 - contrast), 1 + contrast),
               _uniform(seeds[2], max(0.0, 1 - saturation), 1 + saturation),
               _uniform(seeds[3], -hue, hue)]
    ops = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue]
    if _channels(image) == 1:  # Saturation and hue are meaningless for one channel.
        ops, factors = ops[:2], factors[:2]
    order = tf.argsort(_uniform(seeds[4], shape=[len(ops)]))
    for position in range(len(ops)):
        branches = [lambda op=op, f=f, img=image: op(img, f) for op, f in zip(ops, factors)]
        image = tf.switch_case(order[position], branches)
    return image


def random_color_jitter(image, seed, strength=(0.4, 0.4, 0.4, 0.1), prob=0.8):
    apply_seed, jitter_seed = split_seed(seed, 2)
    return tf.cond(_uniform(apply_seed) < prob, lambda: color_jitter(image, jitter_seed, strength),
                   lambda: image)


def random_grayscale(image, seed, prob=0.2):
    if _channels(image) == 1:
        return image
    # Choosing the matrix, not the image, computes one matmul instead of a luma image and a select.
    return _color_matrix(image, tf.where(_uniform(seed) < prob, _gray_matrix(), tf.eye(3)))


def gaussian_blur(image, sigma, kernel_size: int):
    """Separable Gaussian blur with reflect padding (kernel_size odd)."""
    radius = kernel_size // 2
    x = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    kernel = tf.exp(-0.5 * tf.square(x / sigma))
    kernel /= tf.reduce_sum(kernel)
    channels = _channels(image)
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    blurred = tf.nn.depthwise_conv2d(padded, vertical, [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, horizontal, [1, 1, 1, 1], "VALID")
    return blurred[0]


def random_gaussian_blur(image, seed, prob=0.5, sigma=BLUR_SIGMA):
    """SimCLR's blur: kernel about 10% of the image side, sigma uniform in `sigma`, applied with `prob`."""
    apply_seed, sigma_seed = split_seed(seed, 2)
    kernel_size = blur_kernel_size(image.shape[0])
    return tf.cond(_uniform(apply_seed) < prob,
                   lambda: gaussian_blur(image, _uniform(sigma_seed, *sigma), kernel_size), lambda: image)


# ----------------------------------------------------------------------------------------------------------
# RandAugment (Cubuk et al. 2020): `num_layers` ops drawn uniformly from the list below, each at magnitude
# `magnitude` out of 10. Strength grows with the magnitude for every op (timm's "increasing" variants);
# ops with a direction get a random sign. Geometric ops fill with mid-gray, as the reference code does.

_MAX_LEVEL = 10.0
_FILL_VALUE = 0.5


def _projective_transform(image, transform, fill=_FILL_VALUE, interpolation="BILINEAR"):
    """Maps output pixel (x, y) to input ((a0 x + a1 y + a2), (b0 x + b1 y + b2)); constant fill."""
    transform = tf.concat([tf.cast(transform, tf.float32), tf.zeros([2])], axis=0)[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=fill, interpolation=interpolation, fill_mode="CONSTANT")
    return out[0]


def _rotate(image, degrees, **warp):
    """Clockwise by `degrees` about the image centre. warp: fill / interpolation of _projective_transform."""
    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    cos, sin = tf.cos(degrees * math.pi / 180), tf.sin(degrees * math.pi / 180)
    return _projective_transform(image, tf.stack([cos, sin, cx - cos * cx - sin * cy,
                                                  -sin, cos, cy + sin * cx - cos * cy]), **warp)


def _shear(image, amount, axis: int, **warp):
    """x += amount * y (axis 1) or y += amount * x (axis 0), about the image's top-left corner as torchvision."""
    zero, one = tf.constant(0.0), tf.constant(1.0)
    amount = tf.cast(amount, tf.float32)
    # The corner is half a pixel before pixel 0's centre.
    rows = ([one, amount, amount / 2, zero, one, zero] if axis == 1
            else [one, zero, zero, amount, one, amount / 2])
    return _projective_transform(image, tf.stack(rows), **warp)


def _translate(image, fraction, axis: int):
    """Shift by `fraction` of the side (axis 1: x by the width, 0: y by the height)."""
    return _shift(image, fraction * tf.cast(tf.shape(image)[axis], tf.float32), axis)


def _shift(image, pixels, axis: int, **warp):
    """Moves the content by -pixels along x (axis 1) or y (axis 0)."""
    zero, one = tf.constant(0.0), tf.constant(1.0)
    pixels = tf.cast(pixels, tf.float32)
    rows = [one, zero, pixels, zero, one, zero] if axis == 1 else [one, zero, zero, zero, one, pixels]
    return _projective_transform(image, tf.stack(rows), **warp)


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
    channels = [_equalize_channel(levels[..., c]) for c in range(_channels(image))]
    return tf.cast(tf.stack(channels, axis=-1), tf.float32) / 255.0


def _posterize(image, bits: int):
    shift = 8 - bits
    levels = tf.cast(tf.round(image * 255.0), tf.int32)
    return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(levels, shift), shift), tf.float32) / 255.0


def _sharpness(image, factor):
    """PIL ImageEnhance.Sharpness: blend with a 3x3 smoothed image whose 1-px border is the original."""
    channels = _channels(image)
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    inside = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]]) > 0
    degenerate = tf.where(inside, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return blend(degenerate, image, factor)


def _rand_augment_ops(magnitude: float):
    """The op list: name -> fn(image, signed) where `signed` is +1 or -1 (ignored by unsigned ops)."""
    level = magnitude / _MAX_LEVEL

    def enhance(signed):
        return 1.0 + 0.9 * level * signed  # factor in [0.1, 1.9] at magnitude 10

    return {
        "identity": lambda img, s: img,
        "auto_contrast": lambda img, s: _auto_contrast(img),
        "equalize": lambda img, s: _equalize(img),
        "rotate": lambda img, s: _rotate(img, 30.0 * level * s),
        "solarize": lambda img, s: _solarize(img, 1.0 - level),
        "posterize": lambda img, s: _posterize(img, 8 - int(4 * level)),
        "color": lambda img, s: adjust_saturation(img, enhance(s)),
        "contrast": lambda img, s: adjust_contrast(img, enhance(s)),
        "brightness": lambda img, s: adjust_brightness(img, enhance(s)),
        "sharpness": lambda img, s: _sharpness(img, enhance(s)),
        "shear_x": lambda img, s: _shear(img, 0.3 * level * s, axis=1),
        "shear_y": lambda img, s: _shear(img, 0.3 * level * s, axis=0),
        "translate_x": lambda img, s: _translate(img, 0.45 * level * s, axis=1),
        "translate_y": lambda img, s: _translate(img, 0.45 * level * s, axis=0),
    }


def rand_augment(image, seed, num_layers: int = 2, magnitude: float = 9.0):
    """RandAugment on a float32 [0, 1] image: `num_layers` uniformly drawn ops, each at `magnitude`."""
    ops = list(_rand_augment_ops(magnitude).values())
    for layer_seed in split_seed(seed, num_layers):
        op_seed, sign_seed = split_seed(layer_seed, 2)
        op_index = tf.random.stateless_uniform([], op_seed, 0, len(ops), dtype=tf.int32)
        signed = tf.where(_uniform(sign_seed) < 0.5, -1.0, 1.0)
        branches = [lambda op=op, img=image, s=signed: tf.ensure_shape(op(img, s), img.shape) for op in ops]
        image = tf.switch_case(op_index, branches)
    return image


# ----------------------------------------------------------------------------------------------------------
# AutoAugment (Cubuk et al. 2019), ImageNet policy: per image one of 25 sub-policies, chosen uniformly; each
# sub-policy is two (op, probability, magnitude bin) steps, every step applied with its own probability. This is
# torchvision's AutoAugment(AutoAugmentPolicy.IMAGENET): its table, its 10 magnitude bins, a random sign per
# step for signed ops, nearest-neighbour warps with black fill. SupCon's TF code ran tf-models' AutoAugment "v0"
# policy instead, a different table; the PyTorch code GenSCL and SupContrast ship runs torchvision's.

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
_AUTO_AUGMENT_FILL = 0.0  # torchvision's fill=None: black


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
    """fn(image, sign) applying op `name` at `magnitude`; sign (+1 / -1) flips the signed ops.

    Geometric ops warp as torchvision does by default (nearest neighbour, black fill) and take its directions:
    positive rotations turn counter-clockwise, positive translations move the content right / down.
    """
    warp = dict(fill=_AUTO_AUGMENT_FILL, interpolation="NEAREST")
    ops = {
        "ShearX": lambda img, s: _shear(img, magnitude * s, axis=1, **warp),
        "ShearY": lambda img, s: _shear(img, magnitude * s, axis=0, **warp),
        # torchvision truncates the shift to whole pixels.
        "TranslateX": lambda img, s: _shift(img, -float(int(magnitude)) * s, axis=1, **warp),
        "TranslateY": lambda img, s: _shift(img, -float(int(magnitude)) * s, axis=0, **warp),
        "Rotate": lambda img, s: _rotate(img, -magnitude * s, **warp),
        "Brightness": lambda img, s: adjust_brightness(img, 1.0 + magnitude * s),
        "Color": lambda img, s: adjust_saturation(img, 1.0 + magnitude * s),
        "Contrast": lambda img, s: adjust_contrast(img, 1.0 + magnitude * s),
        "Sharpness": lambda img, s: _sharpness(img, 1.0 + magnitude * s),
        "Posterize": lambda img, s: _posterize(img, int(magnitude)),
        "Solarize": lambda img, s: _solarize(img, magnitude / 255.0),
        "AutoContrast": lambda img, s: _auto_contrast(img),
        "Equalize": lambda img, s: _equalize(img),
        "Invert": lambda img, s: 1.0 - img,
    }
    return ops[name]


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
    draws = _uniform(prob_seed, shape=[2])
    signs = tf.where(_uniform(sign_seed, shape=[2]) < 0.5, -1.0, 1.0)
    for position in range(2):
        op_index = tf.gather([step_index[(name, b)] for name, _, b in (sub[position] for sub in policy)], choice)
        prob = tf.gather([p for _, p, _ in (sub[position] for sub in policy)], choice)
        sign = tf.where(tf.gather(signed, op_index), signs[position], 1.0)
        branches = [lambda op=op, img=image, s=sign: tf.ensure_shape(op(img, s), img.shape) for op in ops]
        # torchvision applies a step when its uniform draw is <= the step's probability.
        image = tf.cond(draws[position] <= prob, lambda b=branches, i=op_index: tf.switch_case(i, b),
                        lambda img=image: img)
    return image


# ----------------------------------------------------------------------------------------------------------
# Policies: one view, several views, normalisation.


def augment_view(image, seed, *, policy: str, image_size: int, color: bool = True, blur_prob: float = 0.0,
                 crop_scale=(0.2, 1.0), jitter_strength=(0.4, 0.4, 0.4, 0.1), jitter_prob: float = 0.8,
                 grayscale_prob: float = 0.2, rand_augment_layers: int = 2, rand_augment_magnitude: float = 9.0):
    """One augmented view: decoded image (uint8, or float in [0, 1]) of any size -> uint8 [S, S, C].

    Views leave the host as uint8; the step converts and normalises them (genscl_jax.data.device_preprocess).
    color=False leaves out colour jitter and grayscale (they then run on the accelerator, see
    genscl_jax.data.device_augment, as does the blur then: blur_prob=0); RandAugment and AutoAugment stay on the
    host since the device has no copy of them. A view that is only cropped and flipped never leaves uint8; the
    others are computed in float [0, 1] and quantised once, at the end.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; choose from {POLICIES}")
    crop_seed, flip_seed, jitter_seed, gray_seed, blur_seed, rand_seed = split_seed(seed, 6)
    image = as_uint8(image)
    if policy == "none":
        return pad_or_resize(image, image_size)
    float_ops = policy in ("autoaugment", "randaugment") or (policy == "simclr" and (color or blur_prob > 0))
    if not float_ops:
        return random_flip(resize_to_uint8(random_crop(image, crop_seed, crop_scale), image_size), flip_seed)
    image = random_resized_crop(image, crop_seed, image_size, crop_scale)
    image = random_flip(image, flip_seed)
    # Auto/RandAugment run after the crop (as in SupCon's torchvision pipeline): on the small crop it is cheap.
    if policy == "autoaugment":
        image = auto_augment(image, rand_seed)
    elif policy == "randaugment":
        image = rand_augment(image, rand_seed, rand_augment_layers, rand_augment_magnitude)
    elif policy == "simclr":
        if color:
            image = random_color_jitter(image, jitter_seed, jitter_strength, jitter_prob)
            image = random_grayscale(image, gray_seed, grayscale_prob)
        if blur_prob > 0:
            image = random_gaussian_blur(image, blur_seed, blur_prob)
    return to_uint8(image)


def augment_views(image, seed, num_views: int, **view_kwargs):
    """`num_views` independent views of one image, stacked: uint8 [V, S, S, C]."""
    return tf.stack([augment_view(image, view_seed, **view_kwargs)
                     for view_seed in split_seed(seed, num_views)])
