"""The exploration notebook runs end to end on the tiny demo cube (so it never rots): every cell
executes without error in a kernel on this venv's Python, and the plotting cells draw figures."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "explore_cube.ipynb"


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch) -> str:
    """A ``python3`` kernelspec that runs ``sys.executable`` (this venv), found first on JUPYTER_PATH."""
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager

    install(prefix=str(tmp_path / "jupyter"), kernel_name="python3")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter" / "share" / "jupyter"))
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()
    return "python3"


def test_notebook_executes_on_the_tiny_demo_cube(tiny_cube, venv_kernel, monkeypatch):
    monkeypatch.setenv("DEPTHCUBE_CUBE", str(tiny_cube))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, kernel_name=venv_kernel, timeout=120,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [c for c in code if any("image/png" in o.get("data", {}) for o in c.outputs)]
    # SST map, section, profile density, overview, sample, track masks.
    assert len(images) >= 6
    # The notebook used the cube it was given (not a demo it built itself).
    assert any(str(tiny_cube) in o.get("data", {}).get("text/plain", "") for o in code[1].outputs)
