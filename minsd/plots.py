"""Plotting helpers for the book, so that its pages show the idea and not matplotlib
calls.

`player` turns a figure and an update function into a scrubbable animation (a frame
slider with play buttons, as HTML and JavaScript) that works on a static page, where no
kernel runs.
"""

import json
import re
from collections.abc import Callable, Sequence
from html import escape

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
    *,
    alt: str,
) -> str:
    """A scrubbable player: update(i) redraws `fig` for frame i; returns HTML for
    IPython.display.HTML.

    Every frame is drawn now and embedded as an image, so the slider works without a
    kernel. labels[i], if given, is shown beside the slider while frame i is on (say
    "sigma = 2.1" or "N = 8"); the player opens on frame `start`. alt says in a
    sentence what the frames show, for readers who cannot see them; each frame's
    image reads it followed by the frame's label.
    """
    if not alt.strip():
        raise ValueError("say in alt what the player's frames show")
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
    # Matplotlib links Font Awesome 4 from a CDN for its buttons' icons: a page must
    # not fetch from the internet. The book's theme has Font Awesome, which draws the
    # same icons.
    html = re.sub(
        r'<link rel="stylesheet"\s+href="https://[^"]*font-awesome[^"]*">', "", html
    )
    html = re.sub(
        r'<img id="(_anim_img\w+)">',
        lambda m: f'<img id="{m.group(1)}" alt="{escape(alt.strip())}">',
        html,
    )
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
  var alt = {json.dumps(alt.strip())};
  function hook() {{
    var anim = window["anim{slider.group(1)}"];
    if (!anim) {{ setTimeout(hook, 10); return; }}
    var setFrame = anim.set_frame.bind(anim);
    anim.set_frame = function(frame) {{
      setFrame(frame);
      document.getElementById("{label_id}").textContent = labels[frame];
      document.getElementById(anim.img_id).alt =
        labels[frame] ? alt + " (" + labels[frame] + ")" : alt;
    }};
    anim.set_frame({start});
  }}
  setTimeout(hook, 0);
}})();
</script>"""
    return html + script


# The book's column is about 8.5 inches at 80 dpi: at most 8 thumbnails a row.
MAX_TABLE_COLUMNS = 8


def image_table(
    rows: Sequence[Sequence],
    row_labels: Sequence[str] | None = None,
    column_labels: Sequence[str] | None = None,
    size: float = 0.9,
    title: str | None = None,
    fontsize: float = 9,
):
    """Images as a table: rows[r][c] in row r, column c; returns the figure.

    Each column's label is written once, above the top row, and each row's label
    left of the row, so no label can overlap an image of another row. Images are
    tensors (3, H, W) in [0, 1], arrays or PIL images; `size` is a thumbnail's side
    in inches (0.8 inch is 64 px at the book's 80 dpi).
    """
    n_columns = max(len(row) for row in rows)
    if n_columns > MAX_TABLE_COLUMNS:
        raise ValueError(
            f"{n_columns} columns: at most {MAX_TABLE_COLUMNS} thumbnails fit a row of "
            "the book's column; split the table"
        )
    label_width = 0.0
    if row_labels is not None:
        longest = max(len(line) for label in row_labels for line in label.split("\n"))
        label_width = 0.1 + 0.075 * longest * fontsize / 9  # inches of 9 pt text
    top = 0.0
    if column_labels is not None:
        lines = max(label.count("\n") + 1 for label in column_labels)
        top += 0.2 * lines * fontsize / 9
    if title:
        top += 0.3
    fig, axes = plt.subplots(
        len(rows),
        n_columns,
        figsize=(label_width + size * n_columns, top + size * len(rows)),
        squeeze=False,
    )
    for r, row in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(row):
                image = row[c]
                if not isinstance(image, (torch.Tensor, np.ndarray)):
                    image = np.asarray(image) / 255.0  # a PIL image
                ax.imshow(to_image(image), interpolation="nearest")
            if r == 0 and column_labels is not None:
                ax.set_title(column_labels[c], fontsize=fontsize)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center")
                ax.yaxis.label.set_fontsize(fontsize)
    if title:
        fig.suptitle(title, fontsize=fontsize + 1)
    fig.tight_layout(pad=0.3, w_pad=0.2, h_pad=0.2)
    return fig


def map_panels(
    axes: Sequence,
    maps: torch.Tensor | np.ndarray,
    limit: float,
    outline: torch.Tensor | np.ndarray | None = None,
    size: int | None = None,
) -> list:
    """Draw maps (n, h, w) on n axes, blue below 0 and red above, clipped at +-limit;
    returns the n images, for a player's `set_data`.

    Every map is stretched over an image of size x size pixels (default: the
    outline's size), so that maps of every resolution line up with the image.
    outline: (H, W), drawn as its 0.5 contour (a shape's mask, say).
    """
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().float().cpu().numpy()
    if isinstance(outline, torch.Tensor):
        outline = outline.detach().float().cpu().numpy()
    if len(axes) != len(maps):
        raise ValueError(f"{len(maps)} maps for {len(axes)} axes")
    if size is None and outline is None:
        raise ValueError("give the image's size, or an outline to take it from")
    size = outline.shape[-1] if size is None else size
    extent = (-0.5, size - 0.5, size - 0.5, -0.5)  # the image's pixel grid
    images = []
    for ax, panel in zip(axes, maps):
        images.append(
            ax.imshow(panel, cmap="RdBu_r", vmin=-limit, vmax=limit, extent=extent)
        )
        if outline is not None:
            ax.contour(outline, levels=[0.5], colors="k", linewidths=0.7)
        ax.set_xticks([])
        ax.set_yticks([])
    return images
