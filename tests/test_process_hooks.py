"""Process-wide hooks are the program's to install (runner.run), never a constructor's side effect."""

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
