"""A simple classifier of the shapes dataset's images: background, foreground colour, shape.

background = the median of the border pixels, nearest background colour; foreground = the pixels far
from it; colour = the palette colour nearest their median; shape = from the fill ratio of their
bounding box (square ~1, circle ~pi/4, triangle ~1/2) and the width profile (a triangle widens downwards).
"""

import numpy as np

from minsd.shapes import BACKGROUNDS, COLOURS


def nearest(colour: np.ndarray, palette: dict) -> str:
    names = list(palette)
    distances = [np.linalg.norm(colour - np.array(palette[n], dtype=np.float64)) for n in names]
    return names[int(np.argmin(distances))]


def classify(image: np.ndarray) -> dict:
    """(H, W, 3) uint8 -> {"background", "colour", "shape"} (shape None if nothing stands out)."""
    pixels = image.astype(np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_rgb = np.median(border, axis=0)
    background = nearest(background_rgb, BACKGROUNDS)
    mask = np.linalg.norm(pixels - background_rgb, axis=-1) > 60  # (H, W)
    if mask.sum() < 4:
        return {"background": background, "colour": None, "shape": None}
    colour = nearest(np.median(pixels[mask], axis=0), COLOURS)
    rows, cols = np.nonzero(mask)
    box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    fill = box.mean()
    widths = box.sum(axis=1)
    third = max(1, len(widths) // 3)
    widening = widths[-third:].mean() / max(widths[:third].mean(), 1)  # bottom width / top width
    if fill > 0.9:
        shape = "square"
    elif fill < 0.65 or widening > 2.0:
        shape = "triangle"
    else:
        shape = "circle"
    return {"background": background, "colour": colour, "shape": shape}
