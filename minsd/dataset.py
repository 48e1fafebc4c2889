"""A procedural captioned dataset: coloured shapes on plain backgrounds, made from a
seed.

"a red circle on a black background": a caption names a shape, its colour and the
background. The images are small (32 x 32 by default), anti-aliased by 4x supersampling,
and exactly reproducible: the same seed gives the same images on every machine. The
default model that minsd ships was trained on them (see `minsd/train.py`). `classify`
reads the caption back from an image, to measure how well a model's samples follow their
prompts.
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

COLOURS = {  # RGB, chosen far apart from each other and from both backgrounds
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 210, 30),
}
BACKGROUNDS = {"black": (20, 20, 20), "white": (235, 235, 235)}
SHAPES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str
    cx: float  # centre, in pixels
    cy: float
    size: float  # diameter / side / base of the shape, in pixels

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} on a {self.background} background"


def random_scene(rng: np.random.Generator, image_size: int = 32) -> Scene:
    size = rng.uniform(0.4, 0.7) * image_size
    margin = size / 2 + 1
    return Scene(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=list(COLOURS)[rng.integers(len(COLOURS))],
        background=list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))],
        cx=rng.uniform(margin, image_size - margin),
        cy=rng.uniform(margin, image_size - margin),
        size=size,
    )


def coverage(scene: Scene, image_size: int, supersample: int = 4) -> np.ndarray:
    """The fraction of each pixel that the shape covers, (H, W) in [0, 1]."""
    n = image_size * supersample
    coords = (np.arange(n) + 0.5) / supersample  # sample points, in pixels
    y, x = np.meshgrid(coords, coords, indexing="ij")
    dx, dy, half = x - scene.cx, y - scene.cy, scene.size / 2
    if scene.shape == "circle":
        inside = dx**2 + dy**2 <= half**2
    elif scene.shape == "square":
        inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # an upright isosceles triangle: apex at the top, base at the bottom, as tall
    # as wide
    else:
        t = (dy + half) / scene.size  # 0 at the apex, 1 at the base
        inside = (t >= 0) & (t <= 1) & (np.abs(dx) <= half * t)
    return inside.reshape(image_size, supersample, image_size, supersample).mean(
        axis=(1, 3)
    )


def render(scene: Scene, image_size: int = 32) -> np.ndarray:
    """(H, W, 3) uint8 image of the scene."""
    alpha = coverage(scene, image_size)[..., None]  # (H, W, 1)
    foreground = np.array(COLOURS[scene.colour], dtype=np.float64)
    background = np.array(BACKGROUNDS[scene.background], dtype=np.float64)
    return np.round(alpha * foreground + (1 - alpha) * background).astype(np.uint8)


def make_dataset(
    n: int, seed: int, image_size: int = 32
) -> tuple[np.ndarray, list[Scene]]:
    """n random scenes and their images, (n, H, W, 3) uint8. Same seed, same data."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, image_size) for _ in range(n)]
    return np.stack([render(s, image_size) for s in scenes]), scenes


def all_captions() -> list[str]:
    """Every caption the dataset can produce: 3 shapes x 4 colours x 2 backgrounds =
    24."""
    return [
        f"a {colour} {shape} on a {background} background"
        for shape in SHAPES
        for colour in COLOURS
        for background in BACKGROUNDS
    ]


# --------------------------------------------------------------------------------------
# Reading an image back: background, colour and shape


def nearest(colour: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    """The name of the palette colour nearest to `colour` (RGB, Euclidean distance)."""
    names = list(palette)
    distances = [
        np.linalg.norm(colour - np.array(palette[n], dtype=np.float64)) for n in names
    ]
    return names[int(np.argmin(distances))]


def border_colour(image) -> np.ndarray:
    """The median colour of an (H, W, 3) image's border pixels: its background. (3,)
    float64."""
    pixels = np.asarray(image, dtype=np.float64)  # (H, W, 3)
    # (4 (H + W), 3)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(border, axis=0)


def foreground_mask(image) -> np.ndarray:
    """(H, W) bool: the pixels of an (H, W, 3) uint8 image far (> 60 in RGB) from its
    border's colour."""
    pixels = np.asarray(image, dtype=np.float64)  # (H, W, 3)
    return np.linalg.norm(pixels - border_colour(pixels), axis=-1) > 60


def classify(image) -> dict[str, str | None]:
    """(H, W, 3) uint8 image (array or PIL) -> {"background", "colour", "shape"};
    colour and shape are None if nothing stands out from the background.

    background: the median of the border pixels, named by the nearest background colour.
    foreground: the pixels far from that median; colour: the palette colour nearest
    their median. shape: from the fill ratio of the foreground's bounding box
    (square ~1, circle ~pi/4, triangle ~1/2) and its width profile (a triangle
    widens downwards).
    """
    pixels = np.asarray(image, dtype=np.float64)  # (H, W, 3)
    background = nearest(border_colour(pixels), BACKGROUNDS)
    mask = foreground_mask(pixels)  # (H, W)
    if mask.sum() < 4:
        return {"background": background, "colour": None, "shape": None}
    colour = nearest(np.median(pixels[mask], axis=0), COLOURS)
    rows, cols = np.nonzero(mask)
    # the bounding box
    box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    fill = box.mean()
    widths = box.sum(axis=1)  # the foreground's width in each row, top to bottom
    third = max(1, len(widths) // 3)
    # bottom width / top width
    widening = widths[-third:].mean() / max(widths[:third].mean(), 1)
    if fill > 0.9:
        shape = "square"
    elif fill < 0.65 or widening > 2.0:
        shape = "triangle"
    else:
        shape = "circle"
    return {"background": background, "colour": colour, "shape": shape}


def colour_counts(images: Iterable) -> Counter[str]:
    """How many of `images` show each colour, by `classify` ("none" where no shape
    stands out)."""
    return Counter(classify(image)["colour"] or "none" for image in images)


def describe_colours(images: Iterable) -> str:
    """The colours of `images` in one line, most frequent first: "red 5, blue 3"."""
    return ", ".join(f"{name} {n}" for name, n in colour_counts(images).most_common())
