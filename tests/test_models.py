"""ResNet encoders, heads and the contrastive wrapper.

XLA on CPU compiles slowly, so: big models are only traced (jax.eval_shape), real computations use one tiny
model at one input shape (eager ops are compiled once per shape and then reused across tests), and keys use
the "unsafe_rbg" PRNG, whose kernels compile several times faster than threefry's. Nothing here depends on
which random numbers come out.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import jit_init

from genscl_jax import models

BATCH, SIZE = 4, 8
TINY = dict(stage_sizes=(1, 1), block_cls=models.BasicBlock, width_multiplier=0.125, stem="cifar")
FEATURES = 16  # TINY's pooled feature size: 64 * 0.125 * 2


def key(seed=0):
    return jax.random.key(seed, impl="unsafe_rbg")


def images(seed=0, batch=BATCH, size=SIZE):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, size, size, 3)), jnp.float32)


def param_count(model, size=224):
    shapes = jax.eval_shape(lambda: model.init(key(), jnp.zeros((1, size, size, 3)), train=False))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))


@pytest.fixture(scope="module")
def tiny():
    model = models.ResNet(**TINY)
    return model, jit_init(model, key(), images(), train=False)


@pytest.mark.parametrize("name, expected", [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032), ("resnet101", 44_549_160)])
def test_parameter_count_matches_torchvision(name, expected):
    assert param_count(models.create_resnet(name, num_classes=1000)) == expected


@pytest.mark.parametrize("name, width, expected", [
    ("resnet18", 1, 512), ("resnet50", 1, 2048), ("resnet18", 0.5, 256), ("resnet50", 2, 4096)])
def test_feature_dim_matches_the_model(name, width, expected):
    model = models.create_resnet(name, width_multiplier=width)
    out = jax.eval_shape(lambda: model.init_with_output(key(), jnp.zeros((1, 32, 32, 3)), train=False)[0])
    assert models.feature_dim(name, width_multiplier=width) == expected == out.shape[-1]


def output_shapes(model, size=16):
    """Output and per-block output shapes, traced only."""
    def run():
        return model.init_with_output(key(), jnp.zeros((2, size, size, 3)), train=False,
                                      capture_intermediates=lambda mdl, _: "_block" in (mdl.name or ""))
    out, variables = jax.eval_shape(run)
    blocks = {name: v["__call__"][0].shape for name, v in variables["intermediates"].items()}
    return out.shape, blocks


@pytest.mark.parametrize("block_cls, expansion", [(models.BasicBlock, 1), (models.BottleneckBlock, 4)])
def test_output_shapes_for_both_stems(block_cls, expansion):
    kwargs = dict(stage_sizes=(1, 1, 1, 1), block_cls=block_cls, width_multiplier=0.125)
    out, blocks = output_shapes(models.ResNet(stem="cifar", **kwargs))
    assert out == (2, 64 * expansion)
    # The CIFAR stem keeps 16 px; stages 2-4 halve it.
    assert [blocks[f"stage{s}_block0"][1:3] for s in range(1, 5)] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert blocks["stage1_block0"][-1] == 8 * expansion

    out, blocks = output_shapes(models.ResNet(stem="imagenet", num_classes=10, **kwargs))
    assert out == (2, 10)
    # Stride-2 conv + stride-2 max-pool: 16 px -> 4 px before stage 1.
    assert [blocks[f"stage{s}_block0"][1:3] for s in range(1, 5)] == [(4, 4), (2, 2), (1, 1), (1, 1)]


def test_torchvision_layout_names_and_shapes():
    shapes = jax.eval_shape(lambda: models.create_resnet("resnet18", num_classes=1000).init(
        key(), jnp.zeros((1, 64, 64, 3)), train=False))
    params = shapes["params"]
    blocks = [f"stage{s}_block{b}" for s in range(1, 5) for b in range(2)]
    assert set(params) == {"conv_init", "bn_init", "fc", *blocks}
    assert params["conv_init"]["kernel"].shape == (7, 7, 3, 64)  # HWIO
    assert params["fc"]["kernel"].shape == (512, 1000)
    assert set(shapes["batch_stats"]["bn_init"]) == {"mean", "var"}
    # torchvision has a downsample only where the shape changes.
    assert set(params["stage1_block0"]) == {"conv1", "bn1", "conv2", "bn2"}
    assert set(params["stage2_block0"]) == {"conv1", "bn1", "conv2", "bn2", "proj_conv", "proj_bn"}
    assert params["stage2_block0"]["proj_conv"]["kernel"].shape == (1, 1, 64, 128)


def test_bottleneck_strides_on_its_3x3_conv():
    """ResNet v1.5 (torchvision): conv1 (1x1) keeps the resolution, conv2 (3x3) halves it."""
    model = models.ResNet(stage_sizes=(1, 1), block_cls=models.BottleneckBlock, width_multiplier=0.125, stem="cifar")

    def run():
        return model.init_with_output(key(), jnp.zeros((1, 16, 16, 3)), train=False,
                                      capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Conv))
    _, variables = jax.eval_shape(run)
    block = variables["intermediates"]["stage2_block0"]
    assert block["conv1"]["__call__"][0].shape == (1, 16, 16, 16)
    assert block["conv2"]["__call__"][0].shape == (1, 8, 8, 16)
    assert block["conv3"]["__call__"][0].shape == (1, 8, 8, 64)
    assert set(variables["params"]["stage1_block0"]) >= {"conv3", "bn3", "proj_conv", "proj_bn"}


def test_max_pool_pads_with_minus_infinity():
    x = -1.0 - np.arange(2 * 7 * 7 * 3, dtype=np.float32).reshape(2, 7, 7, 3)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    # torch.nn.MaxPool2d(3, 2, padding=1): output size floor((7 + 2 - 3) / 2) + 1 = 4.
    expected = np.stack([np.stack([padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2)) for j in range(4)], 1)
                         for i in range(4)], 1)
    np.testing.assert_array_equal(models.max_pool_3x3_s2(jnp.asarray(x)), expected)


def train_step(model, variables, x):
    return model.apply(variables, x, train=True, mutable=["batch_stats"])


def with_other_examples(x, seed):
    """x with every example but the first replaced."""
    return x.at[1:].set(images(seed)[1:])


def test_batchnorm_uses_batch_statistics_in_training(tiny):
    model, variables = tiny
    x = images()
    out, updates = train_step(model, variables, x)
    out_other, _ = train_step(model, variables, with_other_examples(x, seed=1))
    assert not np.allclose(out[0], out_other[0], atol=1e-4)
    # Running statistics moved towards this batch's (momentum 0.9: 10% of the batch mean).
    old, new = variables["batch_stats"]["bn_init"], updates["batch_stats"]["bn_init"]
    assert not np.allclose(old["mean"], new["mean"]) and not np.allclose(old["var"], new["var"])


def test_batchnorm_uses_running_statistics_in_evaluation(tiny):
    model, variables = tiny
    x = images()
    # Non-trivial running statistics: after one training step they are no longer 0 / 1.
    _, updates = train_step(model, variables, x)
    variables = {**variables, **updates}
    out = model.apply(variables, x, train=False)
    out_other = model.apply(variables, with_other_examples(x, seed=1), train=False)
    np.testing.assert_allclose(out[0], out_other[0], rtol=1e-5, atol=1e-6)
    train_out, _ = train_step(model, variables, x)
    assert not np.allclose(out, train_out, atol=1e-4)


def test_bfloat16_compute_keeps_float32_params_and_output(tiny):
    model, variables = tiny
    model_bf16 = models.ResNet(**TINY, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(lambda: model_bf16.init(key(), images(), train=False))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(shapes))

    x = images()
    # One jitted compile is cheaper than compiling each bfloat16 op eagerly.
    out, inter = jax.jit(lambda v, x: model_bf16.apply(
        v, x, train=False, capture_intermediates=lambda mdl, _: mdl.name == "stage1_block0"))(variables, x)
    assert inter["intermediates"]["stage1_block0"]["__call__"][0].dtype == jnp.bfloat16
    assert out.dtype == jnp.float32
    reference = model.apply(variables, x, train=False)
    assert np.linalg.norm(out - reference) < 2e-2 * np.linalg.norm(reference)


def test_zero_init_last_bn_makes_each_block_its_shortcut(tiny):
    _, default_variables = tiny
    model = models.ResNet(**TINY, zero_init_last_bn=True)
    variables = jit_init(model, key(), images(), train=False)
    for name in ("stage1_block0", "stage2_block0"):
        np.testing.assert_array_equal(variables["params"][name]["bn2"]["scale"], 0.0)
        np.testing.assert_array_equal(default_variables["params"][name]["bn2"]["scale"], 1.0)
        np.testing.assert_array_equal(variables["params"][name]["bn1"]["scale"], 1.0)

    _, inter = model.apply(variables, images(), train=False,
                           capture_intermediates=lambda mdl, _: mdl.name in ("bn_init", "stage1_block0",
                                                                             "stage2_block0"))
    out = {name: np.asarray(v["__call__"][0]) for name, v in inter["intermediates"].items()}
    stem = np.maximum(out["bn_init"], 0.0)
    # Identity shortcut: relu(0 + x) = x, since x is itself a ReLU output.
    np.testing.assert_allclose(out["stage1_block0"], stem, rtol=1e-6)
    block2 = variables["params"]["stage2_block0"], variables["batch_stats"]["stage2_block0"]
    expected = np.maximum(reference_projection(out["stage1_block0"], *block2, strides=2), 0.0)
    np.testing.assert_allclose(out["stage2_block0"], expected, rtol=1e-5, atol=1e-5)


def test_zero_init_bottleneck_zeroes_bn3_and_equals_its_shortcut():
    block = models.BottleneckBlock(4, strides=2, zero_init_last_bn=True)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(BATCH, SIZE, SIZE, 8)), jnp.float32)
    # New shapes: one jitted compile beats compiling each op eagerly.
    out, variables = jax.jit(lambda k, x: block.init_with_output(k, x, train=False))(key(), x)
    params = variables["params"]
    np.testing.assert_array_equal(params["bn3"]["scale"], 0.0)
    assert all(np.all(params[bn]["scale"] == 1.0) for bn in ("bn1", "bn2", "proj_bn"))
    expected = reference_projection(x, params, variables["batch_stats"], strides=2)
    np.testing.assert_allclose(out, np.maximum(expected, 0.0), rtol=1e-5, atol=1e-5)


def reference_projection(x, params, stats, strides):
    """torchvision's downsample in NumPy: 1x1 conv (stride, no padding) then eval-mode BatchNorm."""
    y = np.asarray(x)[:, ::strides, ::strides] @ np.asarray(params["proj_conv"]["kernel"][0, 0])
    bn, st = params["proj_bn"], stats["proj_bn"]
    return (y - st["mean"]) / np.sqrt(st["var"] + 1e-5) * bn["scale"] + bn["bias"]


@pytest.mark.parametrize("kind", ["mlp", "linear"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_projection_head_is_unit_norm_float32(kind, dtype):
    head = models.ProjectionHead(hidden_dim=FEATURES, output_dim=FEATURES, kind=kind, dtype=dtype)
    features = jnp.asarray(np.random.default_rng(0).normal(size=(BATCH, FEATURES)), jnp.float32)
    variables = head.init(key(), features)
    out = head.apply(variables, features)
    assert out.shape == (BATCH, FEATURES) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
    assert set(variables["params"]) == ({"dense1", "dense2"} if kind == "mlp" else {"dense"})


def test_linear_classifier_returns_float32_logits():
    classifier = models.LinearClassifier(num_classes=FEATURES)
    features = jnp.ones((BATCH, FEATURES), jnp.bfloat16)
    variables = classifier.init(key(), features)
    logits = classifier.apply(variables, features)
    assert logits.shape == (BATCH, FEATURES) and logits.dtype == jnp.float32
    assert set(variables["params"]) == {"fc"}


def test_contrastive_model_returns_features_and_projection(tiny):
    encoder, encoder_variables = tiny
    model = models.ContrastiveModel(encoder=encoder, head=models.ProjectionHead(hidden_dim=FEATURES, output_dim=8))
    x = images()
    variables = jit_init(model, key(), x, train=False)
    # The encoder subtree has the standalone encoder's layout, so pretrained encoder weights drop in.
    assert (jax.tree_util.tree_structure(variables["params"]["encoder"])
            == jax.tree_util.tree_structure(encoder_variables["params"]))
    out = model.apply(variables, x, train=False)
    assert set(out) == {"features", "projection"}
    assert out["features"].shape == (BATCH, FEATURES) and out["features"].dtype == jnp.float32
    assert out["projection"].shape == (BATCH, 8) and out["projection"].dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(out["projection"], axis=-1), 1.0, rtol=1e-5)

    encoded = model.apply(variables, x, method=models.ContrastiveModel.encode)
    np.testing.assert_allclose(encoded, out["features"], rtol=1e-6)
    # Training mode updates the encoder's BatchNorm statistics.
    train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert set(updates["batch_stats"]) == {"encoder"} and train_out["projection"].shape == (BATCH, 8)


def test_unknown_names_raise_value_error():
    with pytest.raises(ValueError, match="allowed names: resnet10, resnet18, resnet34, resnet50, resnet101, "
                                         "resnet152, resnet200"):
        models.create_resnet("resnet19")
    with pytest.raises(ValueError, match="resnet18"):
        models.feature_dim("vit")
    assert models.MODEL_NAMES == ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200")
    with pytest.raises(ValueError, match="stem"):
        models.ResNet(**{**TINY, "stem": "tiny"}).init(key(), images(), train=False)
    with pytest.raises(ValueError, match="kind"):
        models.ProjectionHead(hidden_dim=8, kind="deep").init(key(), jnp.ones((1, 4)))


def test_resnet200_layout():
    """torchvision has no ResNet-200; this is the [3, 24, 36, 3] bottleneck layout (timm's resnet200, 64.7M)."""
    shapes = jax.eval_shape(lambda: models.create_resnet("resnet200", num_classes=1000).init(
        key(), jnp.zeros((1, 32, 32, 3)), train=False))
    params = shapes["params"]
    assert {"stage2_block23", "stage3_block35", "stage4_block2"} <= set(params)
    assert "stage2_block24" not in params and "stage3_block36" not in params
    assert sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params)) == 64_673_832


def check_torch_linear_init(kernel, bias, fan_in):
    """kernel and bias look like draws of U(-b, b), b = 1/sqrt(fan_in): within, reaching the bounds, std b/sqrt(3)."""
    bound = 1 / np.sqrt(fan_in)
    for values in (np.asarray(kernel), np.asarray(bias)):
        assert np.abs(values).max() <= bound
        assert np.abs(values).max() > 0.95 * bound
        # The std of n >= 128 uniform draws has a relative standard error under 4%: 15% is ~4 of them.
        assert values.std() == pytest.approx(bound / np.sqrt(3), rel=0.15)


def test_head_and_classifier_start_like_torch_linear():
    fan_in, hidden = 384, 256
    features = jnp.zeros((1, fan_in), jnp.float32)
    mlp = models.ProjectionHead(hidden_dim=hidden, output_dim=128).init(key(1), features)["params"]
    check_torch_linear_init(mlp["dense1"]["kernel"], mlp["dense1"]["bias"], fan_in)
    check_torch_linear_init(mlp["dense2"]["kernel"], mlp["dense2"]["bias"], hidden)
    linear = models.ProjectionHead(hidden_dim=hidden, output_dim=128, kind="linear").init(key(2), features)["params"]
    check_torch_linear_init(linear["dense"]["kernel"], linear["dense"]["bias"], fan_in)
    fc = models.LinearClassifier(num_classes=1000).init(key(3), features)["params"]["fc"]
    check_torch_linear_init(fc["kernel"], fc["bias"], fan_in)
    assert fc["kernel"].dtype == fc["bias"].dtype == jnp.float32
