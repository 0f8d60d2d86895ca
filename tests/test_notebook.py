"""notebooks/quickstart.ipynb runs top to bottom (with SMOKE=1: a tiny synthetic config) and shows its numbers."""

import os
import re

import nbformat
from nbclient import NotebookClient
import pytest

pytestmark = pytest.mark.slow  # trains a run or starts a process

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOKE", "1")
    monkeypatch.setenv("WORKDIR", str(tmp_path))
    notebook = nbformat.read(os.path.join(ROOT, "notebooks", "quickstart.ipynb"), as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}}).execute()
    outputs = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for out in cell.get("outputs", []))
    assert "final loss" in outputs and "linear_eval_top1" in outputs and "probe_top1" in outputs
    # Quiet: no library warning (orbax's read-only notes, tfds's variant folders, TensorFlow's deprecations).
    streams = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
               if out.get("output_type") == "stream"]
    text = "".join(out["text"] for out in streams)
    noise = [line for line in text.splitlines() if re.search(r"WARNING|^W\d{4} |deprecat|dataset_info\.json|read.only",
                                                             line, re.IGNORECASE)]
    assert not noise, noise
    assert (tmp_path / "pretrain" / "checkpoints").is_dir()
    figures = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
               if "image/png" in out.get("data", {})]
    assert len(figures) == 2  # the training curves (loss, probe and kNN top-1, diagnostics) and the embedding map
