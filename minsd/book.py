"""What the book's chapters share: the settings of a chapter's process, listings of
the package's code, and small measuring helpers.

Every chapter calls `setup()` in its first cell. It is the one place where the book
changes process-wide settings (threads, plotting defaults, library progress bars); the
rest of minsd changes none, so importing it in your own program leaves your process as
it was.

The chapters are read in two places, the rendered book and JupyterLab, so what they
show must render in both: `listing` shows code as Markdown (a fenced block, and a
collapsed block for the whole function), which myst-nb and jupyterlab-myst both render.
"""

import inspect
import os
import textwrap
from collections.abc import Callable

import torch

from .choices import WEIGHTS_ENV


def setup(num_threads: int | None = None) -> None:
    """Configure this process (a chapter's kernel) for the book: threads, figures,
    quiet loading.

    num_threads: torch's CPU threads. By default one for the default model and the
    toy problems, whose operators are too small to share between threads (see
    `minsd.pipeline.recommended_num_threads`, measured there), and torch's own
    choice when $MINSD_WEIGHTS points at SD 1.5, whose are not.
    """
    import matplotlib.pyplot as plt
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    if num_threads is None:
        num_threads = torch.get_num_threads() if os.environ.get(WEIGHTS_ENV) else 1
    torch.set_num_threads(num_threads)
    plt.rcParams.update({"figure.dpi": 80, "font.size": 9})
    # The "Loading weights" bars of transformers and diffusers would land on the
    # page as widgets.
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    _show_figures_inline()


def _show_figures_inline() -> None:
    """In a Jupyter kernel, draw figures into the cell's output whatever $MPLBACKEND
    says: with MPLBACKEND=Agg (common on servers and CI images) a kernel would use Agg,
    and `plt.show()` would display nothing, so the book would lose its figures."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        shell.run_line_magic("matplotlib", "inline")


# A visible listing is at most this many lines; longer code is shown in part, with the
# whole of it one click away.
LISTING_LINES = 15


class Listing:
    """Code as the book shows it: `shown` in the open, and, if it is not all of the
    source, the whole source in a collapsed block titled `title`. Displays as Markdown
    in both the rendered book and JupyterLab."""

    def __init__(self, shown: str, whole: str | None, title: str):
        self.shown, self.whole, self.title = shown, whole, title

    def _repr_markdown_(self) -> str:
        parts = [f"```python\n{self.shown}\n```"] if self.shown else []
        if self.whole is not None:
            # Four colons: the collapsed block holds a code fence of three backticks.
            parts.append(
                f"::::{{dropdown}} {self.title}\n```python\n{self.whole}\n```\n::::"
            )
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        return self.shown or self.whole or ""


def source(obj: Callable | type) -> str:
    """The source code of a function, method or class, dedented."""
    return textwrap.dedent(inspect.getsource(obj)).rstrip("\n")


def listing(
    *objects: Callable | type,
    start: str | None = None,
    stop: str | None = None,
    collapsed: bool = False,
    title: str | None = None,
) -> Listing:
    """Show the package's code in a chapter: the one copy of it, read from the source.

    listing(f): all of f, if it is at most LISTING_LINES lines; otherwise the lines
        from `start` up to `stop`.
    listing(f, start="for i", stop="return"): the lines from the first one that
        contains `start` up to, not including, the next one that contains `stop` (to
        the end without `stop`), dedented; the whole of f one click away.
    listing(f, g, collapsed=True, title="The blocks"): nothing in the open, all of f
        and g in one collapsed block.
    """
    whole = "\n\n".join(source(obj) for obj in objects)
    names = ", ".join(f"`{obj.__qualname__}`" for obj in objects)
    n_lines = whole.count("\n") + 1
    title = title or f"The whole of {names} ({n_lines} lines)"
    if collapsed:
        return Listing("", whole, title)
    if len(objects) != 1:
        raise ValueError("show one object in the open, or several with collapsed=True")
    if start is None and stop is None:
        if n_lines > LISTING_LINES:
            raise ValueError(
                f"{names} is {n_lines} lines, more than a listing shows "
                f"({LISTING_LINES}): choose the lines with start= and stop=, or "
                "collapsed=True"
            )
        return Listing(whole, None, title)
    lines = whole.split("\n")
    first = _find(lines, start, 0) if start is not None else 0
    last = _find(lines, stop, first + 1) if stop is not None else len(lines)
    shown = textwrap.dedent("\n".join(lines[first:last])).rstrip("\n")
    if shown.count("\n") + 1 > LISTING_LINES:
        raise ValueError(
            f"the lines of {names} from {start!r} to {stop!r} are "
            f"{shown.count(chr(10)) + 1}, more than a listing shows ({LISTING_LINES})"
        )
    return Listing(shown, whole, title)


def _find(lines: list[str], text: str, begin: int) -> int:
    """The index of the first of lines[begin:] that contains text."""
    for i in range(begin, len(lines)):
        if text in lines[i]:
            return i
    raise ValueError(f"no line contains {text!r}")


def rms(x: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Root mean square: over all elements (dim=None) or over `dim`. rms(a - b) is a
    distance."""
    x = x.detach().float()
    return x.pow(2).mean().sqrt() if dim is None else x.pow(2).mean(dim).sqrt()


def rms_per_sample(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,): the root mean square of each sample, on the CPU."""
    return rms(x.flatten(1), dim=1).cpu()
