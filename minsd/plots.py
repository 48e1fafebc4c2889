"""Plotting helpers for the book, so that its pages show the idea and not matplotlib
calls.

`player` turns a figure and an update function into a scrubbable animation (a frame
slider with play buttons, as HTML and JavaScript) that works on a static page, where no
kernel runs.
"""

import json
import re
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation

from .preview import latents_to_rgb

# the toy mixture's blobs, by index
BLOB_COLORS = np.array(["tab:blue", "tab:orange", "tab:green"])


def to_image(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) or (H, W, 3) in [0, 1], tensor or array -> (H, W, 3) array for
    imshow."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    if x.ndim == 3 and x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(1, 2, 0)
    return np.clip(x, 0, 1)


def image_grid(
    images: Sequence,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    size: float = 1.6,
    suptitle: str | None = None,
):
    """Show images (tensors (3, H, W) in [0, 1], arrays or PIL images) in a grid;
    returns the figure."""
    images = [
        np.asarray(im) / 255.0 if not isinstance(im, (torch.Tensor, np.ndarray)) else im
        for im in images
    ]
    n = len(images)
    ncols = ncols or min(n, 8)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
        squeeze=False,
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(to_image(images[i]), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def latent_previews(
    latents: torch.Tensor, factors: torch.Tensor | None = None
) -> list[np.ndarray]:
    """(B, C, h, w) latents -> cheap RGB previews (no VAE), one (h, w, 3) array per
    latent."""
    return [to_image(rgb) for rgb in latents_to_rgb(latents, factors)]


def player(
    fig,
    update: Callable[[int], None],
    n_frames: int,
    labels: Sequence[str] | None = None,
    start: int = 0,
    interval_ms: int = 400,
) -> str:
    """A scrubbable player: update(i) redraws `fig` for frame i; returns HTML for
    IPython.display.HTML.

    Every frame is drawn now and embedded as an image, so the slider works without a
    kernel. labels[i], if given, is shown beside the slider while frame i is on (say
    "sigma = 2.1" or "N = 8"); the player opens on frame `start`.
    """
    if labels is not None and len(labels) != n_frames:
        raise ValueError(f"got {len(labels)} labels for {n_frames} frames")
    if not 0 <= start < n_frames:
        raise ValueError(f"start={start} is not a frame of 0..{n_frames - 1}")

    def draw(i: int) -> list:
        update(i)
        return []

    anim = animation.FuncAnimation(
        fig, draw, frames=n_frames, interval=interval_ms, blit=False
    )
    html = anim.to_jshtml(default_mode="once")
    plt.close(fig)
    slider = re.search(r'<input id="_anim_slider(\w+)"[^>]*>', html)
    label_id = f"_anim_label{slider.group(1)}"
    html = html.replace(
        slider.group(0),
        f'{slider.group(0)}<div class="minsd-frame-label" id="{label_id}"></div>',
    )
    # Matplotlib creates its `anim<id>` object in a timeout; once it exists, every
    # frame change also writes the frame's label, and the player opens on `start`.
    script = f"""<script>
(function() {{
  var labels = {json.dumps(list(labels or [""] * n_frames))};
  function hook() {{
    var anim = window["anim{slider.group(1)}"];
    if (!anim) {{ setTimeout(hook, 10); return; }}
    var setFrame = anim.set_frame.bind(anim);
    anim.set_frame = function(frame) {{
      setFrame(frame);
      document.getElementById("{label_id}").textContent = labels[frame];
    }};
    anim.set_frame({start});
  }}
  setTimeout(hook, 0);
}})();
</script>"""
    return html + script
