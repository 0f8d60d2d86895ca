"""Runs one mode of a config end to end and writes <workdir>/summary.json. main.py and notebooks call `run`."""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
from absl import logging

from genscl_jax.training import checkpointing, reporting, train_loop
from genscl_jax.config import validation
from genscl_jax import data
from genscl_jax.runtime import console, parallel, paths, preemption
from genscl_jax.workdirs import run_config, trained_network
from genscl_jax.trainers import teachers


class RunError(RuntimeError):
    """A run that stopped for a reason the user can fix; the message is one line saying how."""


def configure_console(verbose: bool) -> None:
    """The command line's console: the libraries' logging quiet unless `verbose` (runtime/console.py)."""
    console.configure(verbose)


def run(config: Any, workdir: str, *, recipe: str = "") -> dict[str, Any]:
    """Validates `config`, runs config.mode, writes and returns the summary. `recipe` (the config file) is named on
    the console. A run stopped by SIGTERM or Ctrl-C returns with "preempted" (and, for Ctrl-C, "interrupted") set
    and writes no summary."""
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
    try:
        return _run_validated(config, workdir, recipe)
    finally:
        preemption.stop_listening()


def _run_validated(config: Any, workdir: str, recipe: str) -> dict[str, Any]:
    validation.validate(config, jax.device_count(), jax.process_count())
    _check_rerun(config, workdir)
    console.import_tensorflow()  # for TensorBoard and tf.data; quiet, its C++ INFO lines dropped
    # Recorded before training: export, load_encoder and teachers read a workdir's architecture from it, also
    # while the run is unfinished (summary.json comes only at the end).
    _write_record(paths.join(workdir, run_config.CONFIG_FILE), lambda: run_config.write(workdir, config))
    started = time.time()
    try:
        # Missing, damaged or undownloadable data shows here, in seconds, before a model is built or compiled.
        source = data.prepare(config)
        _say_what_runs(config, workdir, recipe, source)
        summary = MODES[config.mode](config, workdir, source)
    except (train_loop.NonFiniteLossError, teachers.TeacherError, checkpointing.CheckpointError,
            trained_network.EncoderError, data.DataError) as e:
        raise RunError(str(e)) from e
    summary.update(config=config.to_dict(), total_wall_seconds=time.time() - started,
                   train_images=source.info.num_train, num_classes=source.info.num_classes)
    if summary.get("preempted"):
        summary["interrupted"] = preemption.was_interrupted()
    else:
        _write_record(paths.join(workdir, "summary.json"), lambda: reporting.write_summary(workdir, summary))
    return summary


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
        changes = validation.rerun_changes(recorded, config)
    except validation.ConfigError as e:
        raise validation.ConfigError(f"--workdir {workdir}: {e}") from None
    if changes:
        logging.warning("%s: resuming with %s (keys that do not change what is trained)", workdir,
                        ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))


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
    # Pretraining's own evaluation (kNN, online probe: last and best) beside the linear evaluation's, which is the
    # run's authoritative number.
    monitored = {k: v for k, v in summary.items() if k.startswith(("knn_", "probe_"))}
    return {**evaluation, **monitored, "mode": "pretrain_and_eval", "pretrain": summary,
            "final_loss": summary["final_loss"], "steps": summary["steps"],
            "images_per_second": summary["images_per_second"], "input_wait_share": summary["input_wait_share"],
            "wall_seconds": summary["wall_seconds"]
            + evaluation["wall_seconds"]}


# config.mode -> what runs it. Only the mode that runs is imported: linear_eval never builds the pretraining step.
# Its names are config.defaults.MODES (validation checks config.mode against those; a test keeps the two equal).
MODES: dict[str, Callable[[Any, str, data.DataSource], dict[str, Any]]] = {
    "pretrain": _pretrain, "linear_eval": _linear_eval, "supervised": _supervised,
    "pretrain_and_eval": _pretrain_and_eval,
}
