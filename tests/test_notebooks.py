"""The notebooks execute headless on tiny settings (T2JAX_NOTEBOOK_FAST=1), so they cannot rot."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

import helpers


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quickstart", "walkthrough"])
def test_notebook_executes(name, tmp_path, monkeypatch):
  path = os.path.join(helpers.REPO, "notebooks", f"{name}.ipynb")
  book = nbformat.read(path, as_version=4)
  monkeypatch.setenv("T2JAX_NOTEBOOK_FAST", "1")
  monkeypatch.setenv("XLA_FLAGS", "")  # the kernel is a plain one-device user session
  monkeypatch.setenv("T2JAX_NOTEBOOK_RUNS", str(tmp_path))
  NotebookClient(book, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": os.path.join(helpers.REPO, "notebooks")}}).execute()
  errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors
