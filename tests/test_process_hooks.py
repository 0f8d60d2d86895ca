"""Process-wide hooks are the program's to install (runner.run), never a constructor's side effect."""

import logging
import sys
import types

import pytest

from genscl_jax import runner
from genscl_jax.training import checkpointing


def test_a_checkpointer_leaves_the_unraisable_hook_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    checkpointing.Checkpointer(str(tmp_path / "checkpoints"))
    assert sys.unraisablehook is sys.__unraisablehook__


@pytest.mark.slow  # calls runner.run (test_tiers' rule), though what it runs is stubbed: seconds
def test_the_runner_installs_the_hook_that_drops_only_orbax_echoes(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    monkeypatch.setattr(runner, "_run_validated", lambda config, workdir, recipe: {"ran": True})
    monkeypatch.setattr(runner.parallel, "initialize_distributed", lambda: None)
    assert runner.run(object(), str(tmp_path / "run")) == {"ran": True}
    hook = sys.unraisablehook
    assert hook is not seen.append
    checkpointing.quiet_orphaned_callbacks()  # a second install changes nothing
    assert sys.unraisablehook is hook
    echo = types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed"))
    other = types.SimpleNamespace(exc_value=RuntimeError("something else"))
    hook(echo)
    hook(other)
    assert seen == [other]


def _asyncio_record(message, error):
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, (type(error), error, None))


def test_orbax_write_tasks_left_behind_by_a_failed_save_are_dropped_other_task_errors_are_not(monkeypatch):
    """A full disk fails every fragment's write task; the save's own failure is the run's one line, and the tasks
    nothing awaited any more reach asyncio's handler as "Task exception was never retrieved", when the garbage
    collector finds them (test_full_disk's traceback, in some runs)."""
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    checkpointing.quiet_orphaned_callbacks()
    full = ValueError("RESOURCE_EXHAUSTED: Error writing \"params.fc.kernel/0\" in OCDBT database: No space left")
    orphan = _asyncio_record("Task exception was never retrieved\nfuture: <Task finished name='Task-556' coro=<async_"
                             "serialize_from_host.<locals>.write_fragment() done, defined at /venv/lib/python3.11/"
                             "site-packages/orbax/checkpoint/_src/serialization/serialization.py:188>>", full)
    ours = _asyncio_record("Task exception was never retrieved\nfuture: <Task finished name='Task-7' coro=<read() "
                           "done, defined at /work/genscl_jax/data/reader.py:10>>", full)
    assert not logging.getLogger("asyncio").filter(orphan)
    assert logging.getLogger("asyncio").filter(ours)
