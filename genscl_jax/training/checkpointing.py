"""The one place that talks to orbax.

Checkpoints live in <workdir>/checkpoints/<step>/, a local directory or a gs:// URL. Orbax writes each one into a
temporary directory and renames it only once complete (a commit marker on object stores), so an interrupted save
leaves an ignored temporary and the previous checkpoint is what a resumed run restores.

What a complete checkpoint can still suffer afterwards (a truncated or lost file from a copy, a full disk or a
flaky network file system) is found when it is restored: a resumed run then sets that checkpoint aside, in
<workdir>/checkpoints/damaged/<step>/ (never deleted: it may be repairable), and resumes from the newest one that
restores. A checkpoint of another network or optimizer is not damage: it stays where it is, and the error says
which array differs. A save that fails (no space left, a lost bucket) ends the run in one line naming the
checkpoint that is still complete.
"""

from __future__ import annotations

import errno
import logging as std_logging
import re
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from genscl_jax.runtime import console, paths

DAMAGED_DIR = "damaged"  # under checkpoints/: not a step number, so orbax never lists what is inside
# Orbax runs each restore and save in its own asyncio loop and closes it when the first read or write fails;
# tensorstore's other reads and writes of that checkpoint complete later into the closed loop, and each reports
# itself as an unraisable exception with a traceback. They repeat a failure already reported in one line.
_ORPHANED_CALLBACK_NOISE = ("Event loop is closed", "Encountered error while reading array index")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written, or read back into this run's state; the message is one line."""


class DamagedCheckpoint(CheckpointError):
    """A checkpoint whose files cannot be read back (truncated, missing, unreadable metadata)."""

    def __init__(self, location: str, step: int, why: str):
        super().__init__(f"checkpoint {location} is damaged ({why})")
        self.step, self.why = step, why


def checkpoint_dir(workdir: str) -> str:
    return paths.join(workdir, "checkpoints")


class Checkpointer:
    """Periodic, asynchronous saves that keep the last `keep` checkpoints; restore of the newest complete one."""

    def __init__(self, directory: str, *, keep: int = 3, read_only: bool = False):
        self.directory = directory
        if read_only:  # orbax's three lines on the options a read-only manager ignores (load_encoder, export)
            console.drop_benign_warnings()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                               cleanup_tmp_directories=not read_only)
        # A gs:// URL goes to orbax as it is; only a local path is made absolute. The handler is named so that
        # item_metadata can read a checkpoint's tree (shapes and dtypes) without restoring it.
        self._manager = ocp.CheckpointManager(paths.for_orbax(directory), options=options,
                                              item_handlers=ocp.StandardCheckpointHandler())
        self._in_flight: int | None = None  # the step of the asynchronous save not yet known to be complete
        self._save_failed = False

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, metadata: dict[str, Any] | None = None) -> None:
        """Saves `state` as `step`, with `metadata` (JSON: e.g. the last logged metrics) beside it; a step already
        saved (e.g. preempted right after a periodic save) is kept. CheckpointError when this or the previous
        (asynchronous) save failed."""
        if step in self._manager.all_steps():
            return
        self.wait()  # a failure of the previous save is reported as that step's
        try:
            self._manager.save(step, args=ocp.args.StandardSave(state), force=True, custom_metadata=metadata or {})
        except Exception as e:  # noqa: BLE001 -- orbax and tensorstore raise many kinds; each is a failed save
            raise self._save_error(step, e) from e
        self._in_flight = step

    def wait(self) -> None:
        """Until the save in flight is complete; CheckpointError if it failed."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 -- see save
            raise self._save_error(self._in_flight, e) from e
        self._in_flight = None

    def close(self) -> None:
        """Waits for the save in flight and releases orbax's threads; a failed save is reported once."""
        if self._save_failed:
            return  # orbax repeats the failure on every wait; the run already stopped with it
        self.wait()
        self._manager.close()

    def _save_error(self, step: int | None, error: Exception) -> CheckpointError:
        self._save_failed = True
        complete = [s for s in self._manager.all_steps() if s != step]
        kept = (f"the newest complete checkpoint, step {max(complete)}, is intact" if complete
                else "no earlier checkpoint exists")
        if _no_space_left(error):
            return CheckpointError(f"checkpoint {step} could not be written to {self.directory}: no space left on "
                                   f"the device; {kept}: free some space and rerun the same command to resume")
        return CheckpointError(f"checkpoint {step} could not be written to {self.directory} ({_why(error)}); "
                               f"{kept}: rerun the same command to resume once the cause is fixed")

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """What `save` stored beside the state of `step` (default: the newest); {} if nothing or unreadable."""
        step = self.latest_step() if step is None else step
        if step is None:
            return {}
        try:
            return dict(self._manager.metadata(step).custom_metadata or {})
        except (ValueError, KeyError, TypeError, OSError, AttributeError):
            return {}  # informational only: a checkpoint without readable metadata still restores

    def restore(self, state_template: Any, step: int | None = None) -> Any:
        """Restores `step` (default: the newest) into the structure, dtypes and shardings of `state_template` (a
        live state or abstract). DamagedCheckpoint if its files cannot be read; CheckpointError if it holds
        another state (a different model, head, optimizer or MoCo setting)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no complete checkpoint in {self.directory}")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state_template)
        difference = _first_difference(self._stored_tree(step), abstract)
        if difference:
            raise CheckpointError(
                f"checkpoint {self._location(step)} does not match this run's state ({difference}): it was written "
                "with another model, head, optimizer or MoCo setting; use a new --workdir, or the config the "
                "workdir's config.json records")
        try:
            return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # noqa: BLE001 -- tensorstore reports a truncated file as a bare Exception
            raise DamagedCheckpoint(self._location(step), step, _why(e)) from e

    def resume(self, state_template: Any) -> tuple[int | None, Any]:
        """(step, state) of the newest checkpoint that restores, or (None, state_template) when there is none.

        Newer checkpoints that are damaged are set aside (checkpoints/damaged/<step>), each with one warning. If
        checkpoints exist and none restores, nothing is moved and the CheckpointError names them all."""
        damaged = []
        for step in reversed(self.steps()):
            try:
                state = self.restore(state_template, step)
            except DamagedCheckpoint as e:
                damaged.append(e)
                continue
            for problem in damaged:
                self._set_aside(problem, resumed_step=step)
            return step, state
        if damaged:
            aside = paths.join(self.directory, DAMAGED_DIR)
            raise CheckpointError(
                f"no checkpoint in {self.directory} restores: "
                + "; ".join(f"step {p.step} is damaged ({p.why})" for p in damaged)
                + f"; restore those directories from a copy, or move them into {aside} to train again from step 0")
        return None, state_template

    def restore_subtree(self, keys: tuple[str, ...], step: int | None = None) -> dict[str, Any]:
        """Reads only some top-level fields (e.g. params and batch_stats of a pretrained encoder) as host arrays;
        DamagedCheckpoint if the checkpoint's files cannot be read."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no complete checkpoint in {self.directory}")
        try:
            restored = self._manager.restore(step, args=ocp.args.StandardRestore())
        except Exception as e:  # noqa: BLE001 -- see restore
            raise DamagedCheckpoint(self._location(step), step, _why(e)) from e
        if hasattr(restored, "items"):
            return {k: restored[k] for k in keys}
        return {k: getattr(restored, k) for k in keys}

    def _stored_tree(self, step: int) -> Any:
        """The tree of shapes and dtypes `step` holds, read from its metadata; DamagedCheckpoint if unreadable."""
        try:
            stored = self._manager.item_metadata(step)
        except Exception as e:  # noqa: BLE001 -- a damaged metadata file fails in json, tensorstore or orbax
            raise DamagedCheckpoint(self._location(step), step, f"its metadata cannot be read: {_why(e)}") from e
        if stored is None:
            raise DamagedCheckpoint(self._location(step), step, "its tree metadata (default/_METADATA) is missing")
        return stored

    def _set_aside(self, problem: DamagedCheckpoint, resumed_step: int) -> None:
        """Moves a damaged checkpoint to checkpoints/damaged/<step> (process 0; all processes wait for it)."""
        if jax.process_index() == 0:
            target, copies = paths.join(self.directory, DAMAGED_DIR, str(problem.step)), 0
            while paths.exists(target):  # the same step damaged again after an earlier rerun
                copies += 1
                target = paths.join(self.directory, DAMAGED_DIR, f"{problem.step}.{copies}")
            paths.move_dir(self._location(problem.step), target)
            logging.warning("checkpoint %s does not restore (%s): moved to %s; resuming from step %d",
                            self._location(problem.step), problem.why, target, resumed_step)
        ocp.multihost.sync_global_processes(f"genscl_jax_set_aside:{self.directory}:{problem.step}")
        self._manager.reload()

    def _location(self, step: int) -> str:
        return paths.join(self.directory, str(step))


def has_checkpoints(directory: str) -> bool:
    """Whether `directory` (a checkpoints/ directory) holds a complete checkpoint."""
    if not paths.is_dir(directory):
        return False
    checkpointer = Checkpointer(directory, read_only=True)
    try:
        return checkpointer.latest_step() is not None
    finally:
        checkpointer.close()


def write_tree(directory: str, tree: Any) -> None:
    """Writes a pytree of arrays as one orbax checkpoint directory (an export, outside any workdir)."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(paths.for_orbax(directory), tree)
    checkpointer.wait_until_finished()
    checkpointer.close()


def _first_difference(stored: Any, abstract: Any) -> str | None:
    """The first array the checkpoint and this run's state disagree on, in orbax's own key paths; None if none."""
    def flat(tree):
        return {"/".join(str(k) for k in path): leaf
                for path, leaf in ocp.tree.to_flat_dict(ocp.tree.serialize_tree(tree, keep_empty_nodes=True)).items()}

    on_disk, expected = flat(stored), flat(abstract)
    for name in sorted(set(on_disk) | set(expected)):
        if name not in expected:
            return f"it holds {name}, which this run's state has not"
        if name not in on_disk:
            return f"it lacks {name}, which this run's state has"
        disk_shape, run_shape = tuple(getattr(on_disk[name], "shape", ())), tuple(getattr(expected[name], "shape", ()))
        if disk_shape != run_shape:
            return f"{name} has shape {disk_shape} there, {run_shape} in this run"
    return None


def _why(error: BaseException) -> str:
    """The innermost cause's first line, without tensorstore's spec dump: what a user can act on."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    lines = str(error).strip().splitlines()
    text = re.sub(r"\s*\[tensorstore_spec.*", "", lines[0]) if lines else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _no_space_left(error: BaseException) -> bool:
    """ENOSPC anywhere in the chain: as an OSError, or in tensorstore's text ("[os_error_code='28']")."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error) or f"os_error_code='{errno.ENOSPC}'" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def quiet_orphaned_callbacks() -> None:
    """Drops the echoes of a failed restore or save (_ORPHANED_CALLBACK_NOISE), which come as unraisable exceptions
    and as asyncio's "Task exception was never retrieved" records; every other one still reaches the previous hook
    or the log. Process-wide (sys.unraisablehook), so the program installs it (runner.run), not a Checkpointer; a
    second call changes nothing."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_orphaned_callbacks", False):
        return

    def hook(unraisable):
        if not _is_orphaned_callback_noise(unraisable.exc_value):
            previous(unraisable)

    hook.drops_orphaned_callbacks = True
    sys.unraisablehook = hook
    std_logging.getLogger("asyncio").addFilter(
        lambda record: not (record.exc_info and (_is_orphaned_callback_noise(record.exc_info[1])
                                                 or _is_orphaned_orbax_task(record))))


def _is_orphaned_orbax_task(record: std_logging.LogRecord) -> bool:
    """asyncio's record of one of orbax's own write tasks that failed and that nothing awaited any more: the save
    they belonged to has already failed, and that failure is the run's one line (a full disk: one per array
    fragment, printed when the garbage collector finds the task, so in some runs and not others)."""
    message = record.getMessage()
    return message.startswith("Task exception was never retrieved") and "/orbax/checkpoint/" in message


def _is_orphaned_callback_noise(error: BaseException | None) -> bool:
    return error is not None and str(error).startswith(_ORPHANED_CALLBACK_NOISE)
