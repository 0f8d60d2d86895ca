"""What a run writes besides checkpoints: TensorBoard events that may fail (a warning) and summary.json that may not."""

import json
import logging

from clu import metric_writers

from genscl_jax.training import reporting


def _warnings(caplog):
    return [r for r in caplog.records if "TensorBoard events cannot be written" in r.getMessage()]


def test_events_that_cannot_be_created_are_one_warning(tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    workdir = str(blocker / "run")  # TensorFlow cannot make a directory inside a file
    caplog.set_level(logging.WARNING)
    writer = reporting.create_writer(workdir)
    for step in range(3):
        writer.write_scalars(step, {"loss": 1.0})
    writer.flush()
    (warning,) = _warnings(caplog)
    assert workdir in warning.getMessage()


def test_events_that_fail_later_are_one_warning_then_dropped(tmp_path, caplog, monkeypatch):
    calls = []

    class FailsOnSecondWrite:
        def __init__(self, logdir):
            pass

        def write_scalars(self, step, scalars):
            calls.append(step)
            if step == 1:
                raise OSError("bucket went away")

        def flush(self):
            pass

    monkeypatch.setattr(metric_writers, "SummaryWriter", FailsOnSecondWrite)
    caplog.set_level(logging.WARNING)
    writer = reporting.create_writer(str(tmp_path))
    for step in range(4):
        writer.write_scalars(step, {"loss": 1.0})
    writer.flush()
    assert calls == [0, 1]  # nothing is sent to the failed writer after its failure
    (warning,) = _warnings(caplog)
    assert "OSError: bucket went away" in warning.getMessage()


def test_summary_json_is_written_whole(tmp_path):
    path = reporting.write_summary(str(tmp_path / "new" / "run"), {"steps": 3, "loss": 0.5})
    assert json.load(open(path)) == {"loss": 0.5, "steps": 3}
    assert sorted(p.name for p in (tmp_path / "new" / "run").iterdir()) == ["summary.json"]  # no temporary left
