"""The shared loop: resume equivalence, preemption, the NaN guard, checkpoint safety and the summary."""

import functools
import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest
from conftest import make_tiny_config
from helpers import assert_trees_equal

from genscl_jax import data, runner
from genscl_jax.runtime import parallel
from genscl_jax.trainers import pretrain
from genscl_jax.training import checkpointing, train_loop


def params_of(workdir, step=None):
    ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
    return ckpt.restore_subtree(("params", "queue", "ema"), step=step)


def loop(config, workdir, batches=None):
    trainer = pretrain.build_trainer(config, parallel.create_mesh(), data.resolve(config))
    if batches is not None:
        trainer.batches = batches(trainer.batches)
    return train_loop.run(trainer, str(workdir), checkpoint_every_steps=config.checkpoint_every_steps,
                          log_every_steps=config.log_every_steps)


def nan_images_at(step, then=lambda: None):
    """Wraps trainer.batches: the batch of `step` (counted from 1) has NaN images; `then()` runs as it is handed
    out."""
    def wrap(batches):
        def wrapped(start):
            for i, batch in enumerate(batches(start)):
                if start + i == step - 1:
                    batch = dict(batch, image=batch["image"] * np.nan)
                    then()
                yield batch
        return wrapped
    return wrap


MOCO = {"moco.enabled": True, "mix.kind": "mixup", "moco.queue_size": 32}


@pytest.mark.slow
def test_k_steps_then_crash_then_resume_equals_2k_steps(tmp_path):
    config = make_tiny_config(num_train_steps=4, checkpoint_every_steps=2, **MOCO)
    straight = loop(config, tmp_path / "straight")
    assert straight.steps == 4

    def crash_after_two(batches):
        def wrapped(start):
            for i, batch in enumerate(batches(start)):
                if i == 2:
                    raise RuntimeError("machine lost")
                yield batch
        return wrapped

    with pytest.raises(RuntimeError, match="machine lost"):
        loop(config, tmp_path / "resumed", batches=crash_after_two)
    resumed = loop(config, tmp_path / "resumed")
    assert resumed.steps == 4
    # Parameters, EMA encoder and queue are bit-identical: the data, rng and schedule all resume exactly.
    assert_trees_equal(params_of(tmp_path / "straight"), params_of(tmp_path / "resumed"))


@pytest.mark.slow
def test_sigterm_saves_and_a_rerun_finishes_identically(tmp_path):
    config = make_tiny_config(num_train_steps=4, checkpoint_every_steps=100, **MOCO)

    def preempt_after_three(batches):
        def wrapped(start):
            for i, batch in enumerate(batches(start)):
                if start == 0 and i == 2:  # while fetching the batch of step 3
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch
        return wrapped

    result = loop(config, tmp_path / "run", batches=preempt_after_three)
    assert result.preempted and result.steps == 3
    assert checkpointing.Checkpointer(checkpointing.checkpoint_dir(tmp_path / "run")).latest_step() == 3
    finished = loop(config, tmp_path / "run")
    assert finished.steps == 4 and not finished.preempted
    straight = loop(config, tmp_path / "straight")
    assert_trees_equal(params_of(tmp_path / "straight"), params_of(tmp_path / "run"))
    assert straight.steps == 4


@pytest.mark.slow
def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # Logging and checkpoints do not fall on step 4: the one-step-late check must catch it.
    config = make_tiny_config(num_train_steps=6, checkpoint_every_steps=3, log_every_steps=100)
    with pytest.raises(train_loop.NonFiniteLossError, match="loss is nan at step 4"):
        loop(config, tmp_path, batches=nan_images_at(4))
    ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(tmp_path))
    assert ckpt.latest_step() == 3
    restored = params_of(tmp_path)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(restored["params"]))


@pytest.mark.slow
def test_preemption_right_after_a_nan_step_saves_nothing(tmp_path):
    """The preemption save happens before that step's loss was seen: it must be checked first."""
    config = make_tiny_config(num_train_steps=6, checkpoint_every_steps=100, log_every_steps=100)
    # The loop sees the SIGTERM, sent as the batch of step 3 is handed out, before step 4.
    preempt = functools.partial(os.kill, os.getpid(), signal.SIGTERM)
    with pytest.raises(train_loop.NonFiniteLossError, match="loss is nan at step 3"):
        loop(config, tmp_path, batches=nan_images_at(3, then=preempt))
    assert checkpointing.Checkpointer(checkpointing.checkpoint_dir(tmp_path)).latest_step() is None


@pytest.mark.slow
def test_resume_restores_the_last_metrics_and_the_eval_state(tmp_path):
    """A resumed or finished-and-rerun run reports the same final loss, and eval hooks get their saved metrics."""
    config = make_tiny_config(num_train_steps=4, checkpoint_every_steps=2, log_every_steps=100)
    resumed_with = []

    def trainer_with_eval():
        trainer = pretrain.build_trainer(config, parallel.create_mesh(), data.resolve(config))
        trainer.periodic_eval = lambda state, step: {"best_so_far": float(10 * step)}
        trainer.eval_every_steps = 2
        trainer.resume_eval = resumed_with.append
        return trainer

    def run(trainer):
        return train_loop.run(trainer, str(tmp_path), checkpoint_every_steps=2, log_every_steps=100)

    crashing = trainer_with_eval()
    batches = crashing.batches

    def crash_after_two(start):
        for i, batch in enumerate(batches(start)):
            if i == 2:
                raise RuntimeError("machine lost")
            yield batch

    crashing.batches = crash_after_two
    with pytest.raises(RuntimeError, match="machine lost"):
        run(crashing)
    finished = run(trainer_with_eval())
    assert resumed_with == [{"best_so_far": 20.0}]  # saved with checkpoint 2
    rerun = run(trainer_with_eval())  # restores the finished run and trains nothing
    assert resumed_with[-1] == {"best_so_far": 40.0}
    assert rerun.steps == finished.steps == 4
    assert np.isfinite(finished.last_metrics["loss"])
    assert rerun.last_metrics == finished.last_metrics and rerun.eval_metrics == finished.eval_metrics
    assert rerun.images_per_second > 0  # the throughput saved with the final checkpoint


def test_unreadable_checkpoint_metadata_still_restores_the_state(tmp_path):
    ckpt = checkpointing.Checkpointer(str(tmp_path))
    ckpt.save(2, {"w": np.arange(3.0)}, {"last_metrics": {"loss": 1.5}})
    ckpt.close()
    ckpt = checkpointing.Checkpointer(str(tmp_path))
    assert ckpt.metadata() == {"last_metrics": {"loss": 1.5}}
    ckpt.close()
    with open(tmp_path / "2" / "_CHECKPOINT_METADATA", "w") as f:
        f.write("{truncated")
    ckpt = checkpointing.Checkpointer(str(tmp_path))
    assert ckpt.metadata() == {}  # the metrics are informational; the state is what must come back
    np.testing.assert_array_equal(ckpt.restore({"w": np.zeros(3)})["w"], np.arange(3.0))
    ckpt.close()


@pytest.mark.slow
def test_half_written_checkpoint_is_never_restored(tmp_path):
    config = make_tiny_config(num_train_steps=2)
    loop(config, tmp_path)
    ckdir = checkpointing.checkpoint_dir(tmp_path)
    # What an interrupted orbax save leaves: a temporary directory with no commit.
    shutil.copytree(os.path.join(ckdir, "2"), os.path.join(ckdir, "4.orbax-checkpoint-tmp-1700000000"))
    assert checkpointing.Checkpointer(ckdir).latest_step() == 2
    resumed = loop(make_tiny_config(num_train_steps=3), tmp_path)
    assert resumed.steps == 3


@pytest.mark.slow
def test_checkpoint_of_another_model_fails_with_a_clear_message(tmp_path):
    loop(make_tiny_config(num_train_steps=2), tmp_path)
    with pytest.raises(checkpointing.CheckpointError, match="does not match this run's state"):
        loop(make_tiny_config(num_train_steps=3, **{"head.output_dim": 16}), tmp_path)


@pytest.mark.slow
def test_damaged_checkpoint_fails_with_a_clear_message_and_is_left_in_place(tmp_path):
    loop(make_tiny_config(num_train_steps=2), tmp_path)
    step_dir = os.path.join(checkpointing.checkpoint_dir(tmp_path), "2")
    damaged = [os.path.join(root, name) for root, _, names in os.walk(step_dir) for name in names
               if os.path.getsize(os.path.join(root, name)) > 100]
    for path in damaged:
        with open(path, "wb") as f:
            f.write(b"truncated")
    with pytest.raises(checkpointing.CheckpointError, match="is damaged"):
        loop(make_tiny_config(num_train_steps=3), tmp_path)
    assert os.path.isdir(step_dir)  # nothing is deleted on the user's behalf


@pytest.mark.slow
def test_runner_writes_the_summary(tmp_path):
    config = make_tiny_config(num_train_steps=3, **MOCO)
    summary = runner.run(config, str(tmp_path))
    with open(tmp_path / "summary.json") as f:
        written = json.load(f)
    for key in ("mode", "steps", "wall_seconds", "images_per_second", "final_loss", "config"):
        assert key in written, key
    assert written["mode"] == "pretrain" and written["steps"] == 3
    assert np.isfinite(written["final_loss"]) and written["final_loss"] == summary["final_loss"]
    assert written["final_metrics"]["queue_fill"] == 1.0  # 3 steps x 16 keys >= 32 slots
    assert written["config"]["moco"]["queue_size"] == 32
    # TensorBoard event files are written next to it.
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))


def test_ctrl_c_is_a_stop_request_a_second_one_stops_at_once_and_handlers_come_back():
    from genscl_jax.runtime import preemption

    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, also in a background job
    preemption.listen()
    try:
        with preemption.StopAgreement() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.should_stop(0) and preemption.was_interrupted()
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        with preemption.StopAgreement() as stop:  # the next loop: the answered Ctrl-C is forgotten
            assert not stop.should_stop(0) and not preemption.was_interrupted()
    finally:
        preemption.stop_listening()
        restored = signal.signal(signal.SIGINT, outer)
    assert restored is signal.default_int_handler  # a notebook's Ctrl-C interrupts again


def test_an_ignored_ctrl_c_stays_ignored():
    """nohup and a script's background jobs start a run with SIGINT ignored: it must not start to stop the run."""
    from genscl_jax.runtime import preemption

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        preemption.listen()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        with preemption.StopAgreement():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        preemption.stop_listening()
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_a_stop_during_an_evaluation_abandons_it_saves_the_step_and_the_resume_redoes_it_first(tmp_path):
    """SIGTERM while the periodic evaluation reads its batches (preemption.poll_batches): the rest of the evaluation
    is skipped, the step is saved with the evaluation marked as due, and the resumed loop evaluates that step
    before it trains on."""
    import jax.numpy as jnp

    from genscl_jax.runtime import preemption

    evaluated, batches_read = [], []

    def periodic_eval(state, step):
        evaluated.append(step)
        for batch in preemption.poll_batches(range(5)):
            batches_read.append((step, batch))
            if len(evaluated) == 1 and batch == 1:
                os.kill(os.getpid(), signal.SIGTERM)  # in the middle of the first evaluation
        return {"w_at_eval": float(state["w"])}

    def make_trainer():  # w counts the steps; every batch is 1
        step = jax.jit(lambda state, batch: ({"w": state["w"] + batch}, {"loss": state["w"]}))
        return train_loop.Trainer(
            name="toy", state={"w": jnp.zeros(())}, train_step=step,
            batches=lambda start: (jnp.ones(()) for _ in iter(int, 1)), total_steps=4, examples_per_step=1,
            periodic_eval=periodic_eval, eval_every_steps=2)

    first = train_loop.run(make_trainer(), str(tmp_path), checkpoint_every_steps=4, log_every_steps=1)
    assert first.preempted and first.steps == 2
    assert batches_read == [(2, 0), (2, 1)]  # abandoned after the batch during which the signal came
    saved = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(tmp_path)), read_only=True)
    assert saved.latest_step() == 2 and saved.metadata(2)["evaluation_due"] is True
    saved.close()

    second = train_loop.run(make_trainer(), str(tmp_path), checkpoint_every_steps=4, log_every_steps=1)
    assert not second.preempted and second.steps == 4
    assert evaluated == [2, 2, 4]  # step 2's evaluation redone first, then the one of step 4
    assert second.eval_metrics == {"w_at_eval": 4.0}
