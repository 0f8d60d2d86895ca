"""The steps a config's mode runs, built as its trainer builds them and lowered for abstract state and batch
(shapes only, nothing allocated) on any mesh: what `python -m genscl_jax.plan` compiles for a TPU slice or GPUs.

pretrain (and pretrain_and_eval's first stage): pretrain.build_program, the trainer's own program, with a teacher of
random weights (shapes only) where the config uses one. supervised: the supervised trainer's step.
pretrain_and_eval's second stage, the linear evaluation: its encoder over an evaluation batch (what precomputes the
features, and evaluates without them) and linear_eval.build_program's classifier step, on stored features or on
views through the frozen encoder, as the config's linear_eval keys choose.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from genscl_jax import data
from genscl_jax.config import features
from genscl_jax.data import device_preprocess
from genscl_jax.models import model_builder
from genscl_jax.runtime import compile_options, parallel
from genscl_jax.tools import step_bench
from genscl_jax.trainers import linear_eval, pretrain, step_settings, supervised
from genscl_jax.training import optimizers
from genscl_jax.training.train_state import train_state_initializer

# The modes whose steps are built here, and what each runs. The linear_eval mode reads its encoder's architecture
# from a pretrained workdir; pretrain_and_eval runs the same linear evaluation on the config's own.
STEPS_OF_MODE = {"pretrain": ("pretrain",), "pretrain_and_eval": ("pretrain", "linear_eval"),
                 "supervised": ("supervised",)}


@dataclasses.dataclass(frozen=True)
class LoweredStep:
    name: str  # "pretrain", "supervised", "linear_eval_features" or "linear_eval"
    lowered: Any  # jax.stages.Lowered, compiled with the trainer's own compiler options
    global_batch: int  # source images per step
    kind: str = ""  # the STEPS_OF_MODE kind that lowered it ("linear_eval" for both its programs): lower_steps


def lower_steps(config: Any, mesh: Mesh, source: data.DataSource,
                kinds: tuple[str, ...] | None = None) -> list[LoweredStep]:
    """The mode's training steps for `config` on `mesh`, lowered; `kinds`: only those of STEPS_OF_MODE's kinds."""
    return [dataclasses.replace(step, kind=kind) for kind in STEPS_OF_MODE[config.mode]
            if kinds is None or kind in kinds for step in _LOWER[kind](config, mesh, source)]


def _batch(config: Any, views: int, source: data.DataSource) -> dict[str, Any]:
    return step_bench.abstract_batch(config.batch_size, views, config.image_size, source.info.channels)


def _lower_pretrain(config: Any, mesh: Mesh, source: data.DataSource) -> list[LoweredStep]:
    spec = source.info
    # The trainer loads config.kd.teacher's weights; their shapes are what the step compiles for.
    teacher = (step_bench.random_teacher(config, spec.num_classes, spec.channels, mesh, abstract=True)
               if features.distillation(config) else None)
    program = pretrain.build_program(
        config, mesh, spec, source.steps_per_epoch(config.batch_size),
        preprocessing=device_preprocess.for_plan(source.views.train, spec), teacher=teacher)
    lowered = program.jit().lower(program.state_shapes(), _batch(config, config.num_views, source),
                                  teacher.variables if teacher else None)
    return [LoweredStep("pretrain", lowered, config.batch_size)]


def _lower_supervised(config: Any, mesh: Mesh, source: data.DataSource) -> list[LoweredStep]:
    spec, steps_per_epoch = source.info, source.steps_per_epoch(config.batch_size)
    total_steps = optimizers.total_train_steps(config, steps_per_epoch)
    platform = parallel.mesh_platform(mesh)
    model = model_builder.build_encoder(config, num_classes=spec.num_classes, training_views=1, platform=platform)
    tx, schedule = optimizers.optimizer_from_config(config, total_steps, steps_per_epoch)
    sample = jnp.zeros((1, config.image_size, config.image_size, spec.channels), jnp.float32)
    initializer = train_state_initializer(lambda rng: model.init(rng, sample, train=False), tx)
    settings = step_settings.read(supervised.SupervisedSettings, config, num_classes=spec.num_classes,
                                  preprocessing=device_preprocess.for_plan(source.views.train, spec))
    step = supervised.make_supervised_step(model, tx, schedule, settings,
                                           layout=parallel.ExampleLayout(mesh))
    options = compile_options.model_jit_options(config, platform).get("compiler_options")
    jitted = parallel.jit_train_step(step, mesh, compiler_options=options)
    state = jax.eval_shape(initializer, jax.random.PRNGKey(config.seed))
    return [LoweredStep("supervised", jitted.lower(state, _batch(config, 1, source)), config.batch_size)]


def _lower_linear_eval(config: Any, mesh: Mesh, source: data.DataSource) -> list[LoweredStep]:
    spec, le = source.info, config.linear_eval
    platform = parallel.mesh_platform(mesh)
    encoder = model_builder.build_encoder(config).clone(dtype=model_builder.compute_dtype(config.dtype))
    sample = jnp.zeros((1, config.image_size, config.image_size, spec.channels), jnp.float32)
    frozen = _placed(jax.eval_shape(functools.partial(encoder.init, train=False), jax.random.PRNGKey(0), sample),
                     parallel.replicated(mesh))
    features = linear_eval.encoder_features(encoder, source.eval_preprocessing())
    images = _placed(jax.ShapeDtypeStruct((config.eval_batch_size, config.image_size, config.image_size,
                                           spec.channels), jnp.uint8), parallel.batch_sharded(mesh))
    encode = jax.jit(features, **compile_options.model_jit_options(config, platform)).lower(frozen, images)

    precomputes = linear_eval.precomputes(config, source)
    train_preprocessing = None if precomputes else device_preprocess.for_plan(source.views.linear_eval, spec)
    program = linear_eval.build_program(config, mesh, spec, encoder, source.steps_per_epoch(le.batch_size),
                                        train_preprocessing=train_preprocessing)
    if precomputes:
        batch = {"features": jax.ShapeDtypeStruct((le.batch_size, program.feature_dim), jnp.float32),
                 "label": jax.ShapeDtypeStruct((le.batch_size,), jnp.int32)}
    else:
        batch = step_bench.abstract_batch(le.batch_size, 1, config.image_size, spec.channels)
    step = program.jit().lower(program.state_shapes(), batch, frozen)
    return [LoweredStep("linear_eval_features", encode, config.eval_batch_size),
            LoweredStep("linear_eval", step, le.batch_size)]


def _placed(tree: Any, sharding: Any) -> Any:
    """Abstract arrays (shapes and dtypes) laid out with `sharding`, as the trainer's inputs are."""
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


_LOWER = {"pretrain": _lower_pretrain, "supervised": _lower_supervised, "linear_eval": _lower_linear_eval}
