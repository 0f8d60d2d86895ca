"""The one place that talks to orbax.

Checkpoints live in <workdir>/checkpoints/<step>/, a local directory or a gs:// URL. Orbax writes each one into a
temporary directory and renames it only once complete (a commit marker on object stores), so an interrupted save
leaves an ignored temporary and the previous checkpoint is what a resumed run restores.
"""

from __future__ import annotations

from typing import Any

import jax
import orbax.checkpoint as ocp

from genscl_jax.runtime import paths


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be restored into this run's state."""


def checkpoint_dir(workdir: str) -> str:
    return paths.join(workdir, "checkpoints")


class Checkpointer:
    """Periodic, asynchronous saves that keep the last `keep` checkpoints; restore of the newest complete one."""

    def __init__(self, directory: str, *, keep: int = 3, read_only: bool = False):
        self.directory = directory
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                               cleanup_tmp_directories=not read_only)
        # A gs:// URL goes to orbax as it is; only a local path is made absolute.
        self._manager = ocp.CheckpointManager(paths.for_orbax(directory), options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, metadata: dict[str, Any] | None = None) -> None:
        """Saves `state` as `step`, with `metadata` (JSON: e.g. the last logged metrics) beside it; a step already
        saved (e.g. preempted right after a periodic save) is kept."""
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True, custom_metadata=metadata or {})

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
        """Restores into the structure, dtypes and shardings of `state_template` (a live state or abstract)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no complete checkpoint in {self.directory}")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state_template)
        try:
            return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise CheckpointError(
                f"checkpoint {self.directory}/{step} does not match this run's state or is damaged (a different "
                f"model, optimizer or MoCo setting, or truncated files?); remove that step directory to resume "
                f"from an earlier one: {str(e).splitlines()[0][:300]}") from e

    def restore_subtree(self, keys: tuple[str, ...], step: int | None = None) -> dict[str, Any]:
        """Reads only some top-level fields (e.g. params and batch_stats of a pretrained encoder) as host arrays."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no complete checkpoint in {self.directory}")
        restored = self._manager.restore(step, args=ocp.args.StandardRestore())
        if hasattr(restored, "items"):
            return {k: restored[k] for k in keys}
        return {k: getattr(restored, k) for k in keys}

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
