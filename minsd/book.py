"""What the book's chapters share: the settings of a chapter's process, and small
measuring helpers.

Every chapter calls `setup()` in its first cell. It is the one place where the book
changes process-wide settings (threads, plotting defaults, library progress bars); the
rest of minsd changes none, so importing it in your own program leaves your process as
it was.
"""

import os

import torch

from .loading import WEIGHTS_ENV


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


def rms(x: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Root mean square: over all elements (dim=None) or over `dim`. rms(a - b) is a
    distance."""
    x = x.detach().float()
    return x.pow(2).mean().sqrt() if dim is None else x.pow(2).mean(dim).sqrt()


def rms_per_sample(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,): the root mean square of each sample, on the CPU."""
    return rms(x.flatten(1), dim=1).cpu()
