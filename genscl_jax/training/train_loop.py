"""The one training loop every trainer (pretraining, supervised, linear evaluation) runs.

It owns what all trainers share: resume from the newest checkpoint that restores before anything else, periodic
checkpoints, SIGTERM (preemption) or Ctrl-C -> save and return at one step all processes agree on (preemption.py),
a NaN/inf guard that stops loudly without saving the bad state, clu metric writers, the console's progress line or
bar (progress.py), periodic evaluation hooks, and the share of time spent waiting for the input pipeline
(input_wait.py). A trainer only brings its state, its compiled step and its batches.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np
from absl import logging

from genscl_jax.runtime import console, preemption
from genscl_jax.training import checkpointing, progress
from genscl_jax.training.input_wait import InputWait


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient became NaN/inf; the run stops and the last good checkpoint stays."""


@dataclasses.dataclass
class Trainer:
    name: str
    state: Any  # initial state, already on the mesh
    train_step: Callable[[Any, Any], tuple[Any, dict]]  # compiled (state, batch) -> (state, metrics)
    batches: Callable[[int], Iterator[Any]]  # start_step -> global batches from that step on
    total_steps: int
    examples_per_step: int
    # (state, step) -> metrics, run every `every_steps` and at the end (e.g. a kNN monitor).
    periodic_eval: Callable[[Any, int], dict] | None = None
    eval_every_steps: int = 0
    # Called on resume with the eval metrics saved beside the restored checkpoint, for hooks that carry state
    # across evaluations (e.g. the best top-1 so far).
    resume_eval: Callable[[dict], None] | None = None
    # The console's progress line every this many steps (and at the end); 0: every log step. Linear evaluation
    # reports per evaluation, where its line has a new test top-1, rather than at each of its many log steps.
    report_every_steps: int = 0


@dataclasses.dataclass
class LoopResult:
    state: Any
    steps: int
    last_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    wall_seconds: float
    images_per_second: float
    preempted: bool
    input_wait_share: float | None = None  # of this invocation's wall time, over its log windows (input_wait.py)


def _host_scalars(metrics: dict) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def run(trainer: Trainer, workdir: str, *, checkpoint_every_steps: int, log_every_steps: int,
        keep_checkpoints: int = 3, writer: Any = None, report_progress: Any = None,
        preemption_check_every_steps: int = 1) -> LoopResult:
    """Runs `trainer` to trainer.total_steps, resuming from <workdir>/checkpoints when one exists.

    With several processes, whether any of them got SIGTERM is agreed every `preemption_check_every_steps` steps.
    """
    started = time.time()
    ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), keep=keep_checkpoints)
    state, start = trainer.state, 0
    throughput = progress.Throughput(trainer.examples_per_step)
    loop = _Loop(trainer, ckpt, writer, report_progress, checkpoint_every_steps, log_every_steps, throughput,
                 preemption_check_every_steps)
    try:
        # The newest checkpoint that restores; newer damaged ones are set aside with a warning each.
        resumed, state = ckpt.resume(trainer.state)
        if resumed is not None:
            start = resumed
            loop.resume_metrics(ckpt.metadata(start))
            console.say(f"{trainer.name}  resumed from step {start} in {ckpt.directory}", log_elsewhere=True)
        loop.stage = progress.StageProgress(trainer.name, trainer.total_steps, throughput, start=start)
        state, step, preempted = loop.run(state, start)
    finally:
        if loop.stage is not None:
            loop.stage.close()
        ckpt.close()  # waits for an asynchronous save in flight, also when the run fails
        preemption.unsaved_progress(False)  # every trained step is in a checkpoint now
    # The final state is always evaluated, also when this invocation only restored a finished run, so a rerun's
    # summary carries the same metrics as the first. A stop request abandons it: the rerun evaluates again.
    eval_metrics = loop.eval_metrics
    if trainer.periodic_eval and not preempted and loop.evaluated_step != step:
        try:
            eval_metrics = loop.evaluate(state, step)
        except preemption.StopRequested:
            preempted = True
    return LoopResult(state=state, steps=step, last_metrics=loop.last_metrics, eval_metrics=eval_metrics,
                      wall_seconds=time.time() - started,
                      # A rerun that trained nothing reports the throughput saved with the checkpoint.
                      images_per_second=throughput.images_per_second() or loop.saved_images_per_second,
                      preempted=preempted, input_wait_share=loop.input_wait.run_share())


@dataclasses.dataclass
class _Loop:
    trainer: Trainer
    ckpt: checkpointing.Checkpointer
    writer: Any
    report_progress: Any
    checkpoint_every_steps: int
    log_every_steps: int
    throughput: progress.Throughput
    preemption_check_every_steps: int = 1
    stage: progress.StageProgress | None = None
    last_metrics: dict = dataclasses.field(default_factory=dict)
    eval_metrics: dict = dataclasses.field(default_factory=dict)
    evaluated_step: int | None = None
    saved_images_per_second: float = 0.0
    input_wait: InputWait = dataclasses.field(default_factory=InputWait)
    wait_metrics: dict = dataclasses.field(default_factory=dict)  # the last closed input-wait window's share
    # A periodic evaluation that a stop request abandoned: saved with the checkpoint, redone first on resume.
    evaluation_due: bool = False

    def run(self, state: Any, start: int) -> tuple[Any, int, bool]:
        trainer, step, pending = self.trainer, start, None
        with preemption.StopAgreement(self.preemption_check_every_steps) as stop:
            if self.evaluation_due:
                self._evaluate_or_abandon(state, start)  # the evaluation a stop abandoned, before any new step
            batches = trainer.batches(start)
            while step < trainer.total_steps:
                if stop.should_stop(step):
                    self._check_pending(pending)  # the state about to be saved must have a finite loss
                    if step > start:
                        self._save(step, state)
                    return state, step, True
                if step == start:  # after the first check: from this line on, the first request meets the compile
                    logging.debug("%s: compiling the step (runs with the first one)", trainer.name)
                state, metrics = trainer.train_step(state, self.input_wait.next_batch(batches))
                step += 1
                preemption.unsaved_progress(True)  # until the loop has ended and its saves are complete
                # The previous step's metrics are checked now, one step late, so the device never waits for it.
                if pending is not None:
                    self._finite_metrics(*pending)
                pending = (step, metrics)
                self.throughput.done(sync=metrics)
                if self.report_progress is not None:
                    self.report_progress(step)
                self._after_step(state, step, metrics)
        self._check_pending(pending)
        return state, step, False

    def _check_pending(self, pending: tuple[int, dict] | None) -> None:
        if pending is not None:
            self.last_metrics = self._finite_metrics(*pending)

    def _finite_metrics(self, step: int, metrics: dict) -> dict[str, float]:
        """Step `step`'s metrics on the host, through the NaN guard: a non-finite loss or gradient norm stops the run
        (NonFiniteLossError) before that step's state can be saved."""
        host = _host_scalars(metrics)
        for key in ("loss", "grad_norm"):
            if key in host and not math.isfinite(host[key]):
                raise NonFiniteLossError(
                    f"{self.trainer.name}: {key} is {host[key]} at step {step}; stopping. The last good checkpoint "
                    "is kept; lower the learning rate, use float32, or enable grad_clip_norm")
        return host

    def resume_metrics(self, saved: dict) -> None:
        """Takes back what `_save` stored, so a resumed (or finished and rerun) run reports the same metrics."""
        self.last_metrics = dict(saved.get("last_metrics", {}))
        self.eval_metrics = dict(saved.get("eval_metrics", {}))
        self.saved_images_per_second = float(saved.get("images_per_second", 0.0))
        self.evaluation_due = bool(saved.get("evaluation_due", False))
        if self.eval_metrics and self.trainer.resume_eval is not None:
            self.trainer.resume_eval(self.eval_metrics)

    def _save(self, step: int, state: Any) -> None:
        self.ckpt.save(step, state, {"last_metrics": self.last_metrics, "eval_metrics": self.eval_metrics,
                                     "images_per_second": self.throughput.images_per_second(),
                                     "evaluation_due": self.evaluation_due})

    def _after_step(self, state: Any, step: int, metrics: dict) -> None:
        last = step == self.trainer.total_steps
        save_now = step % self.checkpoint_every_steps == 0 or last
        logged = step % self.log_every_steps == 0 or save_now
        reported = step % (self.trainer.report_every_steps or self.log_every_steps) == 0 or last
        if logged or reported:
            # A state is saved only after its own step's loss was seen to be finite.
            self.last_metrics = self._finite_metrics(step, metrics)
        if logged:
            self.wait_metrics = self.input_wait.close_window()  # the device has just caught up
            self._write(step, {**self.last_metrics, **self.wait_metrics,
                               "images_per_second": self.throughput.images_per_second()})
        if self.trainer.periodic_eval and self.trainer.eval_every_steps and step % self.trainer.eval_every_steps == 0:
            self._evaluate_or_abandon(state, step)
        if reported:
            # The newest input-wait window's share and evaluation's metrics, too.
            self.stage.report(step, {**self.last_metrics, **self.wait_metrics, **self.eval_metrics})
        else:
            self.stage.advance(step)
        if save_now:
            self._save(step, state)
        # The next input-wait window opens where the device has caught up and evaluation and saving are done: after
        # a log step, and after the first step (whose metrics the throughput meter blocks on; it held compilation).
        if logged or not self.input_wait.started:
            self.input_wait.restart()

    def evaluate(self, state: Any, step: int) -> dict:
        logging.debug("%s: evaluating at step %d", self.trainer.name, step)
        self.eval_metrics = self.trainer.periodic_eval(state, step)
        self.evaluated_step = step
        self.evaluation_due = False
        self._write(step, self.eval_metrics)
        return self.eval_metrics

    def _evaluate_or_abandon(self, state: Any, step: int) -> None:
        """The periodic evaluation of `step`; abandoned at a stop request (preemption.poll_batches), which the next
        stop check then answers, saving this step with the evaluation marked as due."""
        try:
            self.evaluate(state, step)
        except preemption.StopRequested:
            self.evaluation_due = True

    def _write(self, step: int, scalars: dict) -> None:
        if self.writer is not None:
            self.writer.write_scalars(step, scalars)


def run_and_report(trainer: Trainer, config: Any, workdir: str) -> dict[str, Any]:
    """`run` with clu writers, progress reports and a parameter overview; returns the mode's summary."""
    from genscl_jax.training import reporting

    parameters = reporting.describe_parameters(trainer.state.params, workdir)
    console.say(f"{trainer.name}  {trainer.total_steps:,} steps of {trainer.examples_per_step:,} images; {parameters}")
    writer = reporting.create_writer(workdir)
    steps_per_second = reporting.create_progress_reporter(trainer.total_steps, writer)
    try:
        result = run(trainer, workdir, checkpoint_every_steps=config.checkpoint_every_steps,
                     log_every_steps=config.log_every_steps, keep_checkpoints=config.keep_checkpoints,
                     writer=writer, report_progress=steps_per_second,
                     preemption_check_every_steps=config.preemption_check_every_steps)
    finally:
        writer.flush()
    return {"mode": trainer.name, "steps": result.steps, "wall_seconds": result.wall_seconds,
            "images_per_second": result.images_per_second, "final_loss": result.last_metrics.get("loss"),
            "input_wait_share": result.input_wait_share,
            "final_metrics": result.last_metrics, **result.eval_metrics, "preempted": result.preempted}
