"""The book's brief training run (chapter 13): a small UNet trained on this page's CPU
in seconds, with `minsd.train.train_unet` and the default model's frozen VAE and text
encoder, copies of it kept along the way.

`python -m minsd.train` (minsd/train.py) made the default model; this module only
reuses its UNet stage on a smaller target.
"""

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .dataset import BACKGROUNDS, COLOURS, SHAPES, Scene, make_dataset, render
from .errors import InvalidValue
from .pipeline import StableDiffusion
from .tokenizer import token_ids
from .train import TrainConfig, train_unet
from .unet import UNet, UNetConfig

# A UNet small enough to learn something in seconds on one CPU thread (for the book's
# training chapter).
BRIEF_UNET_CONFIG = UNetConfig(
    sample_size=8,
    block_out_channels=(32, 64),  # two levels: 8 x 8 and 4 x 4
    layers_per_block=1,
    num_heads=4,
    cross_attention_dim=32,  # the default model's text encoder
    norm_num_groups=8,
)


@dataclass
class BriefRun:
    """What `train_briefly` returns: the loss of every step and copies of the UNet taken
    during the run."""

    losses: list[float]  # the (min-SNR weighted) loss of each step
    seconds: list[float]  # the time of each step's end, from the start of training
    # (steps taken, seconds, the UNet after them), in order
    checkpoints: list[tuple[int, float, UNet]]


def centred_scenes(
    kinds: list[tuple[str, str, str]], n: int, seed: int, image_size: int = 32
) -> list[Scene]:
    """n scenes that cycle through `kinds`, (colour, shape, background) triples, each
    shape centred in its image and large (0.6 to 0.8 of its width, at random): a
    target small enough to learn in seconds (the book's live run)."""
    unknown = [
        kind
        for kind in kinds
        if kind[0] not in COLOURS or kind[1] not in SHAPES or kind[2] not in BACKGROUNDS
    ]
    if unknown:
        raise InvalidValue(
            f"unknown (colour, shape, background) {unknown}; allowed: "
            f"{list(COLOURS)}, {list(SHAPES)}, {list(BACKGROUNDS)}"
        )
    rng = np.random.default_rng(seed)
    centre = image_size / 2
    scenes = []
    for k in range(n):
        colour, shape, background = kinds[k % len(kinds)]
        size = rng.uniform(0.6, 0.8) * image_size
        scenes.append(Scene(shape, colour, background, centre, centre, size))
    return scenes


def train_briefly(
    pipe: StableDiffusion,
    config: TrainConfig,
    kinds: list[tuple[str, str, str]] | None = None,
    unet_config: UNetConfig = BRIEF_UNET_CONFIG,
    checkpoint_times: tuple[float, ...] = (0.25, 0.5),
) -> BriefRun:
    """Train a fresh UNet of `unet_config` with `train_unet`, in the latent space of
    `pipe`'s VAE and with its text encoder (both frozen), on `config.train_images`
    images, for `config.unet_stop or config.unet_steps` steps or until
    `config.max_minutes` have passed.

    The images are minsd.dataset's random scenes, or, if `kinds` is given, those
    (colour, shape, background) triples with each shape centred (`centred_scenes`).
    A copy of the UNet is kept before the first step, at each of `checkpoint_times`
    (fractions of the steps or of the time, whichever comes first) and at the end.
    """
    size = pipe.default_size
    if kinds is None:
        images, scenes = make_dataset(config.train_images, config.seed, size)
    else:
        scenes = centred_scenes(kinds, config.train_images, config.seed, size)
        images = np.stack([render(scene, size) for scene in scenes])  # (N, H, W, 3)
    # (N, 3, H, W) in [0, 1]
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    latents = pipe.encode(pixels)  # (N, 4, h, w), scaled: the y of training
    captions = token_ids(pipe.tokenizer, [s.caption for s in scenes], pipe.device)
    empty = token_ids(pipe.tokenizer, [""], pipe.device)  # (1, T)
    # a seeded initialisation, leaving the global generator as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        # float32, also where pipe samples in float16
        unet = UNet(unet_config).to(pipe.device).train()
    # frozen: AdamW skips it
    text_encoder = copy.deepcopy(pipe.text_encoder).float().requires_grad_(False)
    steps = config.unet_stop or config.unet_steps
    seconds = math.inf if config.max_minutes is None else 60 * config.max_minutes

    def snapshot(steps_taken: int, elapsed: float) -> tuple[int, float, UNet]:
        return steps_taken, elapsed, copy.deepcopy(unet).eval().requires_grad_(False)

    run = BriefRun(losses=[], seconds=[], checkpoints=[snapshot(0, 0.0)])
    pending = sorted(checkpoint_times)
    start = time.monotonic()

    def record(step: dict) -> None:
        elapsed = time.monotonic() - start
        run.losses.append(step["loss"])
        run.seconds.append(elapsed)
        while pending and (
            elapsed >= pending[0] * seconds or step["step"] + 1 >= pending[0] * steps
        ):
            pending.pop(0)
            run.checkpoints.append(snapshot(step["step"] + 1, elapsed))

    taken, _ = train_unet(
        unet,
        text_encoder,
        latents,
        captions,
        empty,
        config,
        callback=record,
        progress=False,
    )
    run.checkpoints.append(snapshot(taken, time.monotonic() - start))
    return run
