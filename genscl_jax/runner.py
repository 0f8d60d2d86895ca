"""Runs one mode of a config end to end and writes <workdir>/summary.json. main.py and notebooks call `run`."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import jax
import ml_collections
from absl import logging

from genscl_jax.training import checkpointing, reporting, train_loop
from genscl_jax.config import rerun, validation
from genscl_jax import data
from genscl_jax.runtime import console, parallel, paths, preemption
from genscl_jax.workdirs import input_contract, run_config, trained_network
from genscl_jax.trainers import teachers


class RunError(RuntimeError):
    """A run that stopped for a reason the user can fix; the message is one line saying how."""


def configure_console(verbose: bool) -> None:
    """The command line's console: the libraries' logging quiet unless `verbose` (runtime/console.py)."""
    console.configure(verbose)


def run(config: Any, workdir: str, *, recipe: str = "") -> dict[str, Any]:
    """Validates `config`, runs config.mode, writes and returns the summary. `recipe` (the config file) is named on
    the console. A run stopped by SIGTERM or Ctrl-C returns with "preempted" (and, for Ctrl-C, "interrupted") set
    and writes no summary. A workdir holding a finished run of this very config returns its recorded summary with
    "already_finished" set, recomputing nothing."""
    if not workdir:
        raise validation.ConfigError("--workdir is required: the directory for checkpoints and summaries")
    if paths.exists(workdir) and not paths.is_dir(workdir):
        raise validation.ConfigError(f"--workdir {workdir} is a file, not a directory: give a new directory, or the "
                                     "workdir of a run to resume")
    # Multi-process start-up comes first: device counts (and so validation) depend on it.
    parallel.initialize_distributed()
    # jax.distributed takes SIGTERM without a word; from here on SIGTERM and Ctrl-C are stop requests the training
    # loop honours.
    preemption.listen()
    # Before any checkpoint is read or written: a failed save's echoes come while orbax is still unwinding.
    checkpointing.quiet_orphaned_callbacks()
    try:
        return _run_validated(config, workdir, recipe)
    finally:
        preemption.stop_listening()


def _run_validated(config: Any, workdir: str, recipe: str) -> dict[str, Any]:
    started = time.time()  # total_wall_seconds: the "done in" of the result line, which a finished workdir repeats
    validation.validate(config, jax.device_count(), jax.process_count())
    config = _offline_dataset(config)
    _check_rerun(config, workdir)
    finished = _finished_summary(config, workdir)
    if finished is not None:
        return finished
    console.import_tensorflow()  # for TensorBoard and tf.data; quiet, its C++ INFO lines dropped
    # Recorded before training: export, load_encoder and teachers read a workdir's architecture from it, also
    # while the run is unfinished (summary.json comes only at the end).
    _write_record(paths.join(workdir, run_config.CONFIG_FILE), lambda: run_config.write(workdir, config))
    try:
        # Missing, damaged or undownloadable data shows here, in seconds, before a model is built or compiled.
        source = data.readable_source(config)
        _say_what_runs(config, workdir, recipe, source)
        contract = _record_input_contract(config, workdir, source.info)
        summary = MODES[config.mode](config, workdir, source)
    except preemption.StopRequested:
        # Stopped before a training loop could take the request (a linear evaluation's feature extraction): no
        # step was trained in this stage, and nothing is left to save.
        summary = {"mode": config.mode, "steps": None, "preempted": True}
    except (train_loop.NonFiniteLossError, teachers.TeacherError, checkpointing.CheckpointError,
            trained_network.EncoderError, data.DataError) as e:
        raise RunError(str(e)) from e
    summary.update(config=config.to_dict(), total_wall_seconds=time.time() - started,
                   train_images=source.info.num_train, num_classes=source.info.num_classes,
                   data_channels=source.info.channels, data_mean=list(source.info.mean),
                   data_std=list(source.info.std))
    if contract is not None:
        summary["input_contract"] = contract.to_dict()
    if summary.get("preempted"):
        summary["interrupted"] = preemption.was_interrupted()
    else:
        _write_record(paths.join(workdir, "summary.json"), lambda: reporting.write_summary(workdir, summary))
    return summary


def _offline_dataset(config: Any) -> Any:
    """`config`, or with config.synthetic_if_unprepared (`:runlocal`) and a dataset that only a download would
    prepare, a copy that runs on the synthetic task, said on the console. Before the rerun check and config.json:
    the workdir records what it trains on."""
    if not config.synthetic_if_unprepared:
        return config
    console.import_tensorflow()  # quiet, before tfds looks at the dataset
    reason = data.download_needed(config)
    if reason is None:
        return config
    console.say(f"{config.dataset} is {reason}: this run trains on synthetic data instead (prepare the dataset, "
                "then use a new workdir, to run on it)")
    offline = config.copy_and_resolve_references()
    offline.dataset, offline.data_dir = "synthetic", ""
    return offline


def _say_what_runs(config: Any, workdir: str, recipe: str, source: data.DataSource) -> None:
    """Three lines on what runs: the mode, recipe and workdir; the data; the devices and processes."""
    info = source.info
    console.say(f"{config.mode}" + (f" of {recipe}" if recipe else "") + f" in {workdir}")
    subset = f" (a subset of {config.train_subset:,} per class)" if config.train_subset else ""
    console.say(f"  data: {config.dataset}, {info.num_train:,} train{subset} / {source.eval_examples():,} test "
                f"images, {config.image_size}x{config.image_size}x{info.channels}, {info.num_classes} classes")
    processes = jax.process_count()
    console.say(f"  devices: {jax.device_count()} {jax.devices()[0].device_kind}, {processes} "
                + ("process" if processes == 1 else "processes"))


def _record_input_contract(config: Any, workdir: str, info: data.DatasetInfo) -> input_contract.InputContract | None:
    """The encoder's input contract (channels, size, mean and std the data was normalised with), recorded in the
    workdir before training, so load_encoder and export normalise as this run does; None for linear_eval, whose
    encoder is another workdir's."""
    if config.mode not in trained_network.MODES:
        return None
    contract = input_contract.of_run(config, info.channels, info.mean, info.std)
    if jax.process_index() == 0:
        _write_record(paths.join(workdir, input_contract.CONTRACT_FILE),
                      lambda: input_contract.write(workdir, contract))
    return contract


def _write_record(path: str, write: Callable[[], Any]) -> None:
    """A record of the workdir (config.json, summary.json) that cannot be written (a full disk, no permission) is
    one line; the same command, rerun, writes it (a finished run trains nothing more)."""
    try:
        write()
    except OSError as e:
        raise RunError(f"{path} could not be written ({e.strerror or e}): free some space or fix the permissions, "
                       "then rerun the same command") from e


def _check_rerun(config: Any, workdir: str) -> None:
    """A workdir with checkpoints resumes only with the config they were trained with (config.json), up to the
    keys a rerun may change, which are listed once; anything else is a ConfigError before config.json is touched."""
    recorded = run_config.read(workdir) if paths.is_dir(workdir) else None
    if recorded is None or not any(checkpointing.has_checkpoints(checkpointing.checkpoint_dir(stage))
                                   for stage in _stage_dirs(workdir)):
        return
    try:
        changes = rerun.rerun_changes(recorded, config)
    except validation.ConfigError as e:
        raise validation.ConfigError(f"--workdir {workdir}: {e}") from None
    if changes:
        logging.warning("%s: resuming with %s (keys that do not change what is trained)", workdir,
                        ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))


def _finished_summary(config: Any, workdir: str) -> dict[str, Any] | None:
    """The recorded summary when `workdir` holds a finished run of this very config (its summary.json, written only
    at the end, records the config it finished with), marked "already_finished": nothing is recomputed, and one
    line says how to extend or redo it. None when there is something to do (no summary, or any key changed, e.g. a
    longer num_train_steps, which resumes from the last checkpoint)."""
    path = paths.join(workdir, "summary.json")
    if not paths.is_dir(workdir) or not paths.exists(path):
        return None
    summary = json.loads(paths.read_text(path))
    try:
        if "config" not in summary or rerun.rerun_changes(ml_collections.ConfigDict(summary["config"]), config):
            return None
    except validation.ConfigError:
        return None  # _check_rerun let it pass: the checkpoints (config.json) say what the next run continues
    if not _checkpoints_restore(workdir):
        return None  # the normal rerun sets a damaged checkpoint aside and trains again (or names them all)
    if config.mode in trained_network.MODES and input_contract.read(workdir) is None:
        try:  # a workdir from before contracts: recorded now, from the data's facts
            _record_input_contract(config, workdir, data.resolve(config).info)
        except data.DataError as e:
            logging.warning("%s: its input contract could not be recorded (%s)", workdir, e)
    console.say(f"{workdir} holds a finished {config.mode} run of this config ({path}); nothing recomputed. To train "
                "longer, rerun with a larger --config.num_train_steps (it resumes from the last checkpoint); to redo "
                "it, use a new --workdir")
    return {**summary, "already_finished": True}


def _checkpoints_restore(workdir: str) -> bool:
    """Whether the newest checkpoint of every stage of `workdir` reads back whole (what load_encoder, export and a
    resume read), on one process; several processes always take the normal rerun, which restores together."""
    if jax.process_count() > 1:
        return False
    for stage in _stage_dirs(workdir):
        directory = checkpointing.checkpoint_dir(stage)
        if not checkpointing.has_checkpoints(directory):
            continue
        checkpointer = checkpointing.Checkpointer(directory, read_only=True)
        try:
            checkpointer.restore_subtree(())
        except checkpointing.CheckpointError:
            return False
        finally:
            checkpointer.close()
    return True


def _stage_dirs(workdir: str) -> list[str]:
    """The directories whose checkpoints/ a run of `workdir` writes: itself, or pretrain_and_eval's two stages."""
    return [workdir, paths.join(workdir, "pretrain"), paths.join(workdir, "linear_eval")]


def _pretrain(config: Any, workdir: str, source: data.DataSource) -> dict[str, Any]:
    from genscl_jax.trainers import pretrain
    return pretrain.run(config, workdir, source)


def _supervised(config: Any, workdir: str, source: data.DataSource) -> dict[str, Any]:
    from genscl_jax.trainers import supervised
    return supervised.run(config, workdir, source)


def _linear_eval(config: Any, workdir: str, source: data.DataSource) -> dict[str, Any]:
    from genscl_jax.trainers import linear_eval
    return linear_eval.run(config, workdir, source, pretrained_workdir=config.linear_eval.pretrained_workdir)


def _pretrain_and_eval(config: Any, workdir: str, source: data.DataSource) -> dict[str, Any]:
    from genscl_jax.trainers import linear_eval, pretrain
    pretrain_dir = paths.join(workdir, "pretrain")
    summary = pretrain.run(config, pretrain_dir, source)
    if summary.get("preempted"):
        return summary
    # The encoder is read back through the workdir, as any other reader of it would (its config.json).
    evaluation = linear_eval.run(config, paths.join(workdir, "linear_eval"), source, pretrained_workdir=workdir)
    # One meaning per key: the top level is pretraining's (final_loss, final_metrics, steps, its kNN and probe),
    # the linear evaluation's whole summary is under "linear_eval", and its linear_eval_* numbers, the run's
    # authoritative result, are at the top too.
    result = {k: v for k, v in evaluation.items() if k.startswith("linear_eval_") or k == "preempted"}
    return {**summary, **result, "mode": "pretrain_and_eval", "pretrain": summary, "linear_eval": evaluation,
            "wall_seconds": summary["wall_seconds"] + evaluation["wall_seconds"]}


# config.mode -> what runs it. Only the mode that runs is imported: linear_eval never builds the pretraining step.
# Its names are config.defaults.MODES (validation checks config.mode against those; a test keeps the two equal).
MODES: dict[str, Callable[[Any, str, data.DataSource], dict[str, Any]]] = {
    "pretrain": _pretrain, "linear_eval": _linear_eval, "supervised": _supervised,
    "pretrain_and_eval": _pretrain_and_eval,
}
