"""Every chapter notebook executes without error (jupytext + nbclient, a per-cell timeout)."""

from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.md"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path):
    notebook = jupytext.read(path)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError, with the failing cell and its traceback
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors


def test_every_notebook_is_in_the_book():
    toc = (Path(__file__).resolve().parents[1] / "_toc.yml").read_text()
    assert all(f"notebooks/{p.stem}" in toc for p in NOTEBOOKS)
