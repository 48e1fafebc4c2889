"""The chapter notebooks as source: in the book, set up alike, formatted, written with
markup that renders both in the book and in JupyterLab, every computed number defined
before it is shown, saved as JupyterLab saves them.

They are executed once, by the strict book build in tests/test_book.py.
"""

import ast
import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest
from jupytext.config import load_jupytext_configuration_file

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


# Roles and directives that JupyterLab (jupyterlab-myst) cannot render as the book does:
# what they would show there is a raw label, a warning or nothing. Chapters link with
# Markdown links, show code with minsd.book.listing and numbers with {eval}.
NOT_IN_BOTH = re.compile(
    r"\{(doc|ref|numref|cite(:[pt])?|glue(:\w+)?|literalinclude|raw)\}"
)
EVAL_ROLE = re.compile(r"\{eval\}`([^`]*)`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_chapters_use_only_markup_that_renders_in_both_places(path):
    """No role or directive that JupyterLab shows raw, and no glue (its values do not
    reach JupyterLab): links, listings and {eval} instead."""
    text = path.read_text()
    assert not NOT_IN_BOTH.findall(text), (
        f"{path.name} uses {sorted({m.group(0) for m in NOT_IN_BOTH.finditer(text)})}"
    )
    assert "myst_nb" not in text and "glue(" not in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_computed_number_is_computed_before_its_sentence(path):
    """An {eval} shows a variable of the kernel, and the chapter runs top to bottom
    while it is read (inline in the book, Run All in JupyterLab): each name must be a
    plain name, assigned by a code cell above the Markdown cell that shows it. In the
    book a `remove-cell` cell runs only when the next code cell on the page runs, so
    what it assigns counts from there on."""
    assigned: set[str] = set()
    pending: set[str] = set()  # assigned by remove-cell cells not yet run in the book
    for cell in jupytext.read(path).cells:
        if cell.cell_type == "markdown":
            for name in EVAL_ROLE.findall(cell.source):
                assert re.fullmatch(r"[A-Za-z_]\w*", name), (
                    f"{path.name}: {{eval}}`{name}` is not a plain name"
                )
                assert name in assigned, (
                    f"{path.name}: {{eval}}`{name}` is shown before a cell assigns it"
                    + (" (a remove-cell cell: use remove-input)" * (name in pending))
                )
        elif cell.cell_type == "code":
            if "remove-cell" in cell.metadata.get("tags", []):
                pending |= names_assigned(cell.source)
            else:
                assigned |= pending | names_assigned(cell.source)
                pending = set()


def names_assigned(source: str) -> set[str]:
    """The names a cell binds at its top level (assignments, loops, imports, defs)."""
    tree = ast.parse(re.sub(r"^[%!].*$", "", source, flags=re.M))  # no IPython magics
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


VISIBLE_CODE_LINES = 15  # minsd.book.LISTING_LINES
HIDDEN = {"hide-input", "remove-input", "hide-cell", "remove-cell"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_visible_code_cells_are_a_dozen_lines(path):
    """A code cell the page shows in the open is at most 15 lines; longer code is
    hidden (hide-input) or shown in part with minsd.book.listing."""
    for cell in jupytext.read(path).cells:
        if cell.cell_type != "code" or HIDDEN & set(cell.metadata.get("tags", [])):
            continue
        lines = cell.source.strip("\n").count("\n") + 1
        assert lines <= VISIBLE_CODE_LINES, (
            f"{path.name}: a visible code cell of {lines} lines: {cell.source[:80]!r}"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_sliders_print_nothing_under_themselves(path):
    """`interact(...)` as a cell's last expression prints `<function ...>` under its
    slider (a trailing `;` would not survive ruff format): decorate the function or
    assign the result."""
    for cell in jupytext.read(path).cells:
        if cell.cell_type != "code" or "interact" not in cell.source:
            continue
        last = ast.parse(cell.source).body[-1]
        is_call = isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
        name = ast.unparse(last.value.func) if is_call else ""
        assert not name.endswith("interact"), f"{path.name}: {cell.source[:120]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_save_from_jupyterlab_would_change_nothing(path):
    """The file is exactly what JupyterLab writes when a reader saves the chapter
    (jupytext with notebooks/jupytext.toml, JupyterLab's kernelspec), so opening,
    running and saving a chapter leaves `git status` clean. To rewrite a chapter in
    this form: jupytext.writes(jupytext.reads(text, 'md:myst'), 'md:myst',
    config=...) after setting the kernelspec below."""
    config = load_jupytext_configuration_file(str(ROOT / "notebooks/jupytext.toml"))
    text = path.read_text()
    notebook = jupytext.reads(text, fmt="md:myst")
    assert notebook.metadata["kernelspec"] == JUPYTERLAB_KERNELSPEC
    assert list(notebook.metadata["kernelspec"]) == list(JUPYTERLAB_KERNELSPEC)
    assert jupytext.writes(notebook, fmt="md:myst", config=config) == text


# What JupyterLab writes into a notebook's header for its default Python kernel, in
# this order.
JUPYTERLAB_KERNELSPEC = {
    "name": "python3",
    "display_name": "Python 3 (ipykernel)",
    "language": "python",
}


def test_figures_display_whatever_mplbackend_says(tmp_path):
    """With MPLBACKEND=Agg in the environment a kernel draws no figure on plt.show();
    minsd.book.setup() makes it draw them, as the book and JupyterLab need."""
    import nbclient
    import nbformat

    def images(setup: bool) -> int:
        cells = ["import matplotlib.pyplot as plt"]
        if setup:
            cells.append("import minsd.book\nminsd.book.setup()")
        cells.append("plt.plot([0, 1], [1, 0])\nplt.show()")
        notebook = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell(c) for c in cells]
        )
        client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3")
        with _environment(MPLBACKEND="Agg"):  # the kernel inherits it
            client.execute()
        outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
        return sum("image/png" in o.get("data", {}) for o in outputs)

    assert images(setup=False) == 0  # what a reader with MPLBACKEND=Agg would see
    assert images(setup=True) == 1


@contextlib.contextmanager
def _environment(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
