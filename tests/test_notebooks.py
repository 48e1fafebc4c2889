"""The chapter notebooks as source: in the book, set up alike, formatted, every glued
value defined.

They are executed once, by the strict book build in tests/test_book.py.
"""

import re
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.md"))
# Code cells fit the book's text column at this width. To format the notebooks:
# PATH=.venv/bin:$PATH jupytext --pipe "ruff format --isolated --line-length 88 -"
# notebooks/*.md
LINE_LENGTH = 88


def code_cells(path: Path) -> list[str]:
    return [
        cell.source for cell in jupytext.read(path).cells if cell.cell_type == "code"
    ]


def test_every_notebook_is_in_the_book():
    """Every notebook in notebooks/ is a page of the book's table of contents."""
    toc = (ROOT / "_toc.yml").read_text()
    assert all(f"notebooks/{p.stem}" in toc for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_first_cell_sets_up_the_chapter(path):
    """One execution policy (minsd.book.setup), never a chapter's own copy of it."""
    cells = code_cells(path)
    assert "minsd.book.setup()" in cells[0]
    for setting in ("set_num_threads", "rcParams", "disable_progress_bar"):
        assert not any(setting in cell for cell in cells), (
            f"{path.name} sets {setting} itself"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_live_widget_cells_are_for_jupyter_only(path):
    """Cells that build live ipywidgets sliders are hidden from the page and not
    executed by the build (tag skip-execution): the page shows the precomputed
    player instead. In the build, the widgets' comm traffic sometimes left nbclient
    waiting out the whole 300 s cell timeout for a reply the kernel had already sent
    (4 of 6 builds beside two busy processes stalled so; the one
    traced stalled right after an ipywidgets cell)."""
    for cell in jupytext.read(path).cells:
        if cell.cell_type == "code" and "ipywidgets." in cell.source:
            tags = cell.metadata.get("tags", [])
            assert "remove-cell" in tags and "skip-execution" in tags, cell.source[:200]


def test_notebooks_are_formatted(tmp_path):
    """ruff format at 88 columns would change no code cell, and no code line is longer
    (comments included)."""
    for path in NOTEBOOKS:
        for i, source in enumerate(code_cells(path)):
            (tmp_path / f"{path.stem}_cell{i:02d}.py").write_text(source + "\n")
    ruff = [
        sys.executable,
        "-m",
        "ruff",
        "format",
        "--isolated",
        "--line-length",
        str(LINE_LENGTH),
    ]
    result = subprocess.run(
        [*ruff, "--diff", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    long_lines = [
        f"{path.name}: {line}"
        for path in NOTEBOOKS
        for cell in code_cells(path)
        for line in cell.splitlines()
        if len(line) > LINE_LENGTH
    ]
    assert not long_lines, "\n".join(long_lines)


# {glue}`key`, {glue:text}`key:.2f`
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([\w.-]+)")
# glue("key", ...) or glue(f"key_{name}", ...)
GLUE_CALL = re.compile(r"glue\(\s*(f?)[\"']([^\"']+)[\"']")


def glued_keys(path: Path) -> list[re.Pattern]:
    """The keys a chapter's code glues, as patterns: an f-string's {fields} match any
    name."""
    patterns = []
    for is_f_string, key in GLUE_CALL.findall("\n".join(code_cells(path))):
        parts = re.split(r"\{[^}]*\}", key) if is_f_string else [key]
        patterns.append(re.compile("[\\w.-]+".join(map(re.escape, parts))))
    return patterns


def test_glued_values_are_computed_in_their_chapter():
    """Each number glued into a chapter's prose is computed by a glue() call of that
    chapter, and
    no key is glued by two chapters."""
    owners = {}
    for path in NOTEBOOKS:
        patterns = glued_keys(path)
        shown = set(GLUE_ROLE.findall(path.read_text()))
        missing = [key for key in shown if not any(p.fullmatch(key) for p in patterns)]
        assert not missing, (
            f"{path.name} shows values it never computes: {sorted(missing)}"
        )
        for key in shown:
            assert owners.setdefault(key, path.name) == path.name, (
                f"glue key {key!r} in two chapters"
            )
