"""BatchNorm recalibration (trainers/batch_norm_recalibration) and linear evaluation's use of it
(linear_eval.recalibrate_batch_stats)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_tiny_config
from helpers import jit_init

from genscl_jax import data
from genscl_jax.data import device_preprocess
from genscl_jax.models import model_builder
from genscl_jax.runtime import parallel
from genscl_jax.trainers import batch_norm_recalibration, linear_eval

# Each BatchNorm layer of the ResNet and the conv whose output is its input.
_CONV_OF = {"bn_init": "conv_init", "bn1": "conv1", "bn2": "conv2", "proj_bn": "proj_conv"}


def _tiny_encoder_with_wrong_statistics():
    config = make_tiny_config()
    encoder = model_builder.build_encoder(config)
    variables = jit_init(encoder, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), train=False)
    # Running statistics far from anything the images give: recalibration must not read them.
    wrong = jax.tree_util.tree_map(lambda x: jnp.full_like(x, 7.0), variables["batch_stats"])
    return config, encoder, {"params": variables["params"], "batch_stats": wrong}


def _conv_outputs(encoder, variables, images):
    """{conv path: its output} in train mode, captured by Flax (independently of the recalibration's interceptor)."""
    _, state = encoder.apply(variables, images, train=True, mutable=["batch_stats", "intermediates"],
                             capture_intermediates=lambda module, method: module.name in _CONV_OF.values())
    flat = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
    return {tuple(k.key for k in path[:-2]): value.astype(jnp.float32) for path, value in flat}


def test_statistics_are_the_mean_and_variance_of_each_layers_inputs_over_all_batches():
    _, encoder, variables = _tiny_encoder_with_wrong_statistics()
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    batches = [2.0 * jax.random.uniform(k, (16, 8, 8, 3)) + 0.5 * i for i, k in enumerate(keys)]  # batch means differ
    mesh = parallel.create_mesh()
    recalibrated = batch_norm_recalibration.recalibrate_batch_stats(encoder, variables, iter(batches), 3, mesh)

    conv_outputs = jax.jit(lambda v, x: _conv_outputs(encoder, v, x))
    outputs = [conv_outputs(variables, images) for images in batches]
    stats = dict(jax.tree_util.tree_flatten_with_path(recalibrated["batch_stats"])[0])
    layers = {tuple(k.key for k in path[:-1]) for path in stats}
    assert len(layers) == 12  # every BatchNorm layer of the tiny ResNet-10
    for layer in layers:
        conv = layer[:-1] + (_CONV_OF[layer[-1]],)
        # [48, H, W, C]: the inputs of every image of the three batches
        inputs = np.concatenate([np.asarray(o[conv], np.float64) for o in outputs])
        by_key = {path[-1].key: value for path, value in stats.items() if tuple(k.key for k in path[:-1]) == layer}
        np.testing.assert_allclose(by_key["mean"], inputs.mean((0, 1, 2)), rtol=1e-5, atol=1e-6, err_msg=str(layer))
        np.testing.assert_allclose(by_key["var"], inputs.var((0, 1, 2)), rtol=1e-5, atol=1e-6, err_msg=str(layer))
    jax.tree_util.tree_map(np.testing.assert_array_equal, recalibrated["params"], variables["params"])


def _first_step_loss(config, encoder_variables):
    trainer = linear_eval.build_trainer(config, parallel.create_mesh(), data.resolve(config), encoder_variables)
    _, metrics = trainer.train_step(trainer.state, next(trainer.batches(0)))
    return float(metrics["loss"])


@pytest.mark.slow
def test_linear_eval_takes_features_with_recalibrated_statistics_and_zero_is_off():
    config, encoder, variables = _tiny_encoder_with_wrong_statistics()
    config.linear_eval.augment = "none"
    config.linear_eval.precompute_features = True
    mesh, source = parallel.create_mesh(), data.resolve(config)
    assert linear_eval._recalibrated(config, mesh, source, encoder, variables) is variables  # 0: untouched

    batches = source.training_input(mesh, source.views.evaluation, batch_size=config.batch_size,
                                    num_views=1).batches(0)
    clean = (device_preprocess.normalize(b["image"][:, 0], source.eval_preprocessing()) for b in batches)
    expected = batch_norm_recalibration.recalibrate_batch_stats(encoder, variables, clean, 2, mesh)
    as_trained = _first_step_loss(config, variables)
    with_expected = _first_step_loss(config, expected)
    config.linear_eval.recalibrate_batch_stats = 2
    recalibrated = _first_step_loss(config, variables)
    assert recalibrated == with_expected and recalibrated != as_trained, (recalibrated, with_expected, as_trained)
