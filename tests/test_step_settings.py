"""Config reaches a step one way: every settings field names its config key (or a config.features flag), and one
function reads them all."""

import dataclasses

import pytest

from genscl_jax.config import defaults, features
from genscl_jax.data import device_preprocess
from genscl_jax.trainers import pretrain_step, step_settings, supervised

GIVEN = {"num_classes", "total_steps", "preprocessing"}


@pytest.mark.parametrize("cls", [pretrain_step.PretrainSettings, supervised.SupervisedSettings])
def test_every_setting_is_read_from_the_config_or_given(cls):
    for field in dataclasses.fields(cls):
        assert field.name in GIVEN or "from_config" in field.metadata, field.name


def test_settings_carry_the_configs_values_and_feature_flags():
    config = defaults.base_config()
    config.temperature, config.kd.alpha, config.moco.enabled, config.mix.prob = 0.3, 2.0, True, 0.25
    config.micro_batch_size = 64
    prep = device_preprocess.Preprocessing(mean=(0.5,), std=(0.25,))
    s = step_settings.read(pretrain_step.PretrainSettings, config, num_classes=7, total_steps=11, preprocessing=prep)
    assert (s.temperature, s.kd_alpha, s.mix.prob, s.micro_batch_size) == (0.3, 2.0, 0.25, 64)
    assert (s.num_classes, s.total_steps, s.preprocessing) == (7, 11, prep)
    assert s.distillation and s.moco and s.distillation == features.distillation(config)
    config.kd.alpha, config.moco.enabled = 0.0, False
    s = step_settings.read(pretrain_step.PretrainSettings, config, num_classes=7, total_steps=11, preprocessing=prep)
    assert not s.distillation and not s.moco
    with pytest.raises(TypeError):  # a field the trainer must give
        step_settings.read(pretrain_step.PretrainSettings, config, num_classes=7, preprocessing=prep)
