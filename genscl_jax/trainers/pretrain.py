"""GenSCL pretraining: assembles model, optimizer, state, data and the compiled step, then runs the shared loop."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from genscl_jax import data
from genscl_jax.data import device_preprocess
from genscl_jax.models import model_builder
from genscl_jax.objectives import momentum_encoder
from genscl_jax.runtime import compile_options, parallel
from genscl_jax.trainers import online_probe, pretrain_eval, pretrain_step, teachers
from genscl_jax.training import optimizers, train_loop
from genscl_jax.training.train_state import TrainState, train_state_initializer


@dataclasses.dataclass(frozen=True)
class PretrainProgram:
    """The product's pretraining step and what it runs on: what the trainer loops, the bench times and the
    collective audit inspects, so all three see the same program."""
    step_fn: Callable  # the pure step (state, global batch, teacher_variables) -> (state, metrics)
    model: Any  # the contrastive model (encoder + projection head)
    mesh: Mesh
    init_state: Callable[[], TrainState]  # the initial state, replicated on the mesh
    state_shapes: Callable[[], Any]  # the state's shapes and dtypes, without computing it
    teacher: teachers.Teacher | None
    probe: online_probe.OnlineProbe | None  # the online linear probe the step trains (config.online_probe)
    total_steps: int
    compiler_options: dict[str, Any] | None  # what training compiles the step with (compile_options)

    def jit(self, compiler_options: dict[str, Any] | None = None):
        """The step jitted as training runs it; `compiler_options` replaces training's (the bench's variants)."""
        options = self.compiler_options if compiler_options is None else compiler_options
        return parallel.jit_train_step(self.step_fn, self.mesh, num_replicated_args=1, compiler_options=options)


def build_program(config: Any, mesh: Mesh, spec: data.DatasetInfo, steps_per_epoch: int, *,
                  preprocessing: device_preprocess.Preprocessing,
                  teacher: teachers.Teacher | None = None) -> PretrainProgram:
    """Model, optimizer, state and step for `config` on `mesh`, for data described by `spec` with
    `steps_per_epoch` steps of config.batch_size per epoch (epoch-based schedules), whose uint8 views the step
    finishes with `preprocessing` (DataSource.training_input)."""
    total_steps = optimizers.total_train_steps(config, steps_per_epoch)
    platform = parallel.mesh_platform(mesh)  # every platform choice is the mesh's, not the host's
    model = model_builder.build_contrastive_model(config, training_platform=platform)
    tx, schedule = optimizers.optimizer_from_config(config, total_steps, steps_per_epoch)
    settings = pretrain_step.settings_from_config(config, spec.num_classes, total_steps, preprocessing)
    if settings.distillation and teacher is None:
        teacher = teachers.load_teacher(config, spec.num_classes, spec.channels)

    sample = jnp.zeros((1, config.image_size, config.image_size, spec.channels), jnp.float32)
    make_queue = None
    if settings.moco:
        make_queue = functools.partial(momentum_encoder.empty_queue, config.moco.queue_size, config.head.output_dim,
                                       spec.num_classes, settings.distillation)
    probe = online_probe.from_config(config, spec.num_classes)
    initializer = train_state_initializer(lambda rng: model.init(rng, sample, train=False), tx,
                                          with_ema=settings.moco, make_queue=make_queue,
                                          make_probe=probe.init if probe else None)
    seed_key = jax.random.PRNGKey(config.seed)
    step = pretrain_step.make_pretrain_step(model, tx, schedule, settings,
                                            teacher_fn=teacher.logits if teacher else None,
                                            replicate=parallel.replicated_constraint(mesh), probe=probe,
                                            layout=parallel.ExampleLayout(mesh))
    return PretrainProgram(
        step_fn=step, model=model, mesh=mesh,
        init_state=lambda: compile_options.run_once(initializer, seed_key, out_shardings=parallel.replicated(mesh)),
        state_shapes=lambda: jax.eval_shape(initializer, seed_key), teacher=teacher, probe=probe,
        total_steps=total_steps,
        compiler_options=compile_options.model_jit_options(config, platform).get("compiler_options"))


def build_trainer(config: Any, mesh: Mesh, source: data.DataSource, *,
                  teacher: teachers.Teacher | None = None) -> train_loop.Trainer:
    spec = source.info
    train = source.training_input(mesh, source.views.train, batch_size=config.batch_size, num_views=config.num_views)
    program = build_program(config, mesh, spec, source.steps_per_epoch(config.batch_size),
                            preprocessing=train.preprocessing, teacher=teacher)
    state, total_steps, teacher, compiled = program.init_state(), program.total_steps, program.teacher, program.jit()
    teacher_variables = parallel.replicate(teacher.variables, mesh) if teacher else None

    # kNN and the online probe's test top-1, every config.eval_every_steps steps and at the end.
    evaluator = pretrain_eval.make_evaluator(config, mesh, program.model, source, program.probe)
    return train_loop.Trainer(
        name="pretrain", state=state, train_step=lambda s, b: compiled(s, b, teacher_variables), batches=train.batches,
        total_steps=total_steps, examples_per_step=config.batch_size, periodic_eval=evaluator,
        eval_every_steps=config.eval_every_steps, resume_eval=evaluator.resume if evaluator else None)


def run(config: Any, workdir: str, source: data.DataSource, *, mesh: Mesh | None = None,
        teacher: teachers.Teacher | None = None) -> dict[str, Any]:
    """Pretrains to the configured number of steps (resuming from `workdir`) and returns the run's summary."""
    trainer = build_trainer(config, mesh or parallel.create_mesh(), source, teacher=teacher)
    return train_loop.run_and_report(trainer, config, workdir)
