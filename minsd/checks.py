"""What minsd refuses, and the message that says why.

The modules that tell the story (the samplers, the pipeline, loading) call these checks
in one line where they guard, so that the story reads first. Every error names the
wrong value and what is allowed; nothing is silently fixed. A few arguments are allowed
but probably not meant (a prompt longer than the text encoder reads): a warning says so.
"""

import math
import numbers
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from .choices import SAMPLERS, SPACINGS
from .errors import InvalidType, InvalidValue, NotFinite

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


# -- what counts as an integer, a number, a list of prompts ----------------------------


def is_integer(value: object) -> bool:
    """int or numpy integer, but not bool (True is an int in Python, never a count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_positive_integer(value: object) -> bool:
    """An integer (see `is_integer`) above 0."""
    return is_integer(value) and value > 0


def is_number(value: object) -> bool:
    """int, float or numpy number, but not bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_sequence(value: object) -> bool:
    """A list or a tuple (any sequence but a string): a config.json's lists and a
    model's .config's tuples say the same."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def is_list_of_strings(value: object) -> bool:
    """A sequence (see `is_sequence`) whose items are all strings (an empty one too)."""
    return is_sequence(value) and all(isinstance(v, str) for v in value)


# -- the schedule ----------------------------------------------------------------------


def check_num_steps(num_steps: int) -> None:
    """A sampler's step count: a positive integer."""
    if not is_positive_integer(num_steps):
        raise InvalidValue(
            "the number of sampling steps must be a positive integer, "
            f"got {type(num_steps).__name__}: {num_steps!r}"
        )


def check_spacing(spacing: object) -> None:
    """A schedule's spacing: one of `SPACINGS` (see scheduler.get_sigmas)."""
    if spacing not in SPACINGS:
        raise InvalidValue(
            f"unknown spacing {spacing!r}; expected one of {', '.join(SPACINGS)}"
        )


# -- devices and dtypes ----------------------------------------------------------------


def default_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA; fp32 elsewhere.

    fp16 on a CPU fails or crawls, and bf16 is 15-200x slower here.
    """
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def resolve_device(device: torch.device | str | None) -> torch.device:
    """The device to run on: None for the default, else one that exists here."""
    if device is None:
        return default_device()
    if not isinstance(device, (str, torch.device)):
        raise InvalidType(
            "device must be None, a string such as 'cuda' or 'cpu', or a torch.device, "
            f"got {device!r}"
        )
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise InvalidValue(
            f"{device!r} is not a device; expected 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from err
    if device.type == "cuda":
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n_gpus == 0:
            build = (
                "a CPU-only build of torch"
                if torch.version.cuda is None
                else "no GPU visible"
            )
            raise InvalidValue(
                f"device {str(device)!r} is not available ({build}); use device='cpu'"
            )
        if device.index is not None and device.index >= n_gpus:
            raise InvalidValue(
                f"device {str(device)!r} is not available: this machine has {n_gpus} "
                "GPU(s)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidValue(
            f"device {str(device)!r} is not available on this machine; use device='cpu'"
        )
    elif device.type not in ("cpu", "mps"):
        raise InvalidValue(
            f"device {str(device)!r}: minsd runs on 'cpu', 'cuda' or 'mps'"
        )
    return device


def resolve_dtype(dtype: torch.dtype | None, device: torch.device) -> torch.dtype:
    """The network's dtype: None for the device's default, else a floating dtype."""
    if dtype is None:
        return default_dtype(device)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidType(
            "dtype must be None or a floating-point torch.dtype such as torch.float16 "
            f"or torch.float32, got {dtype!r}"
        )
    return dtype


# -- load_pipeline's paths -------------------------------------------------------------


def check_path_argument(name: str, value: object) -> None:
    """weights or config: None, or a path (a str or os.PathLike)."""
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise InvalidType(
            f"{name} must be None or a path (a str or os.PathLike), got "
            f"{type(value).__name__}: {value!r:.80}"
        )
    if isinstance(value, str) and not value.strip():
        raise InvalidValue(
            f"{name} is an empty string; give a folder, a .safetensors file, or None"
        )


def check_config_argument(config: str | os.PathLike | None, weights: Path) -> None:
    """config names the configs of a single-file checkpoint, and only of one (the
    folder itself is read, and refused if it is not one, before the weights)."""
    if config is not None and weights.is_dir():
        raise InvalidValue(
            f"config is for single-file checkpoints; {weights} is a folder with its "
            "own configs"
        )


# -- StableDiffusion.generate's arguments, in the order it checks them -----------------


def check_generate_arguments(
    prompt: object,
    negative_prompt: object,
    height: object,
    width: object,
    steps: object,
    guidance: object,
    seed: object,
    num_images: object,
    sampler: object,
    init_image: object,
    strength: object,
    default_size: int,
    factor: int,
) -> tuple[list[str], int, int, float | None]:
    """Every argument of `StableDiffusion.generate`, checked before any work.

    Returns the prompts as a list, and the height, width and strength that sampling
    uses: with an init_image, the image's size and strength 0.8 unless given
    (diffusers' default); else `default_size` (the model's) where none is given.
    """
    check_prompts(prompt, negative_prompt)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    image_size = check_init_image(init_image, len(prompts), height, width)
    if image_size is not None:
        height, width = image_size
        strength = 0.8 if strength is None else strength
    height = default_size if height is None else height
    width = default_size if width is None else width
    check_image_size(height, width, factor)
    check_sampling_arguments(steps, guidance, seed, num_images, sampler)
    check_strength(strength, steps, init_image is not None)
    warn_unused_negative_prompt(negative_prompt, guidance)
    return prompts, height, width, strength


def check_prompts(prompt: object, negative_prompt: object) -> None:
    """The prompts: a string or a non-empty list of strings.

    A negative prompt is None, a string, or a list of strings, one per prompt.
    """
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not is_list_of_strings(prompts) or not prompts:
        raise InvalidType(
            f"prompt must be a string or a non-empty list of strings, got {prompt!r}"
        )
    if negative_prompt is None or isinstance(negative_prompt, str):
        return
    if not is_list_of_strings(negative_prompt):
        raise InvalidType(
            "negative_prompt must be None, a string or a list of strings, got "
            f"{type(negative_prompt).__name__}: {negative_prompt!r}"
        )
    if len(negative_prompt) != len(prompts):
        raise InvalidValue(
            f"got {len(negative_prompt)} negative prompts for {len(prompts)} prompts; "
            "give one per prompt"
        )


def check_init_image(
    init_image: object, n_prompts: int, height: object, width: object
) -> tuple[int, int] | None:
    """img2img's image, if any: PIL, or (1 or n_prompts, 3, H, W) pixels in [0, 1].

    A height or width that is given must be the image's. Returns the image's (height,
    width), or None without an image.
    """
    if init_image is None:
        return None
    if isinstance(init_image, Image.Image):
        image_width, image_height = init_image.size
    elif isinstance(init_image, torch.Tensor):
        pixels = init_image.detach().float()
        shape = tuple(pixels.shape)
        if len(shape) != 4 or shape[1] != 3 or shape[0] not in (1, n_prompts):
            raise InvalidValue(
                f"init_image must have shape (1 or {n_prompts}, 3, H, W) (one image, "
                f"or one per prompt), got {shape}"
            )
        if not torch.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
            raise InvalidValue(
                "init_image's pixels must be finite and in [0, 1], got values in "
                f"[{pixels.min().item():.3g}, {pixels.max().item():.3g}]"
            )
        image_height, image_width = pixels.shape[-2:]
    else:
        raise InvalidType(
            "init_image must be a PIL image or a (B, 3, H, W) tensor of pixels in "
            f"[0, 1], got {type(init_image).__name__}"
        )
    if (height is not None and height != image_height) or (
        width is not None and width != image_width
    ):
        raise InvalidValue(
            f"init_image is {image_width} x {image_height} pixels but height={height}, "
            f"width={width} were asked; leave height and width out (they default to "
            "the image's) or resize the image"
        )
    return int(image_height), int(image_width)


def check_image_size(height: object, width: object, factor: int) -> None:
    """Height and width: positive multiples of the VAE's downsampling factor.

    Whole numbers of pixels; a refusal suggests the nearest two sizes that work.
    """
    for name, size in (("height", height), ("width", width)):
        if not is_integer(size):
            raise InvalidType(
                f"{name} must be an integer number of pixels, got "
                f"{type(size).__name__}: {size!r}"
            )
        if size <= 0 or size % factor:
            lower = max(factor, size // factor * factor)
            raise InvalidValue(
                f"{name} must be a positive multiple of {factor} (the VAE's "
                f"downsampling factor), got {size!r}; try {lower} or {lower + factor}"
            )


def check_sampling_arguments(
    steps: object, guidance: object, seed: object, num_images: object, sampler: object
) -> None:
    """The step count, guidance, seed, image count and sampler.

    A positive step count, a finite guidance scale, a seed torch's generator takes, a
    positive image count and a sampler of `SAMPLERS`.
    """
    check_num_steps(steps)
    if not is_number(guidance):
        raise InvalidType(
            "guidance must be a number (e.g. 7.5), got "
            f"{type(guidance).__name__}: {guidance!r}"
        )
    if not math.isfinite(guidance):
        raise InvalidValue(
            "guidance must be a finite number (e.g. 7.5; 1 turns guidance off), "
            f"got {guidance!r}"
        )
    if not is_integer(seed) or not 0 <= seed < 2**64:
        raise InvalidValue(
            "seed must be an integer in [0, 2**64), the range of torch's generator, "
            f"got {seed!r}"
        )
    if not is_positive_integer(num_images):
        raise InvalidValue(f"num_images must be a positive integer, got {num_images!r}")
    if sampler not in SAMPLERS:
        raise InvalidValue(
            f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}"
        )


def check_strength(strength: object, steps: int, img2img: bool) -> None:
    """img2img's strength: a number in (0, 1], given only with an init_image.

    It must leave at least one of the `steps` steps to run.
    """
    if not img2img:
        if strength is not None:
            raise InvalidValue(
                f"strength={strength!r} needs an init_image: it says how much of the "
                "image to keep"
            )
        return
    if not is_number(strength):
        raise InvalidType(
            "strength must be a number in (0, 1], got "
            f"{type(strength).__name__}: {strength!r}"
        )
    if not 0 < strength <= 1:
        raise InvalidValue(
            "strength must be in (0, 1] (1: start from pure noise plus the image), "
            f"got {strength!r}"
        )
    if int(steps * strength) < 1:
        raise InvalidValue(
            f"strength {strength} of {steps} steps runs int({steps} * {strength}) = 0 "
            f"steps; use at least {math.ceil(1 / strength)} steps or a larger strength"
        )


# -- warnings: allowed, but probably not what was meant --------------------------------


def warn_long_prompts(tokenizer: "PreTrainedTokenizerBase", prompts: list[str]) -> None:
    """Warn about each prompt longer than the text encoder reads: the rest is cut."""
    T = tokenizer.model_max_length
    for prompt in prompts:
        # start and end tokens included; verbose=False: this warning replaces the
        # tokenizer's own "indexing errors" one
        n_tokens = len(tokenizer(prompt, verbose=False).input_ids)
        if n_tokens > T:
            warnings.warn(
                f"prompt has {n_tokens} tokens, more than the text encoder's {T} "
                f"(start and end tokens included); everything after token {T - 1} "
                f"is ignored: {prompt!r}",
                stacklevel=4,
            )


def warn_unused_negative_prompt(negative_prompt: object, guidance: object) -> None:
    """Warn that a negative prompt at guidance 1 changes nothing."""
    if guidance == 1.0 and negative_prompt is not None:
        warnings.warn(
            "the negative prompt has no effect at guidance 1.0 (no unconditional pass)",
            stacklevel=5,
        )


# -- the pipeline's other inputs, and its result ---------------------------------------


def check_one_image(prompt: object, generate_args: dict) -> None:
    """cross_attention_maps draws one image: one prompt (a string), num_images 1."""
    if generate_args.get("num_images", 1) != 1 or not isinstance(prompt, str):
        raise InvalidValue(
            "cross_attention_maps draws one image of one prompt: pass a string and no "
            "num_images"
        )


def check_pixels(pixels: torch.Tensor) -> None:
    """Pixels for the VAE: (B, 3, H, W)."""
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise InvalidValue(
            f"expected pixels of shape (B, 3, H, W), got {tuple(pixels.shape)}"
        )


def check_finite(x: torch.Tensor, what: str, where: str) -> None:
    """Sampling's latents and the VAE's pixels must be finite: NaN or inf raises, not a
    black image."""
    if not torch.isfinite(x).all():
        raise NotFinite(f"{what} ({where}); if this is fp16, try dtype=torch.float32")


# -- the settings of a training run (minsd/train.py) -----------------------------------


def check_train_config(config: Any) -> None:
    """A minsd.train.TrainConfig's settings (not imported: train.py imports this
    module): counts are positive integers, unet_stop within unet_steps, lr >= 0 and
    max_minutes positive (or None)."""
    counts = ["train_images", "vae_steps", "vae_batch", "unet_steps", "unet_batch"]
    for name in counts + ["model_max_length"]:
        value = getattr(config, name)
        if not is_positive_integer(value):
            raise InvalidValue(f"{name} must be a positive integer, got {value!r}")
    stop = config.unet_stop
    if not (stop is None or is_positive_integer(stop) and stop <= config.unet_steps):
        raise InvalidValue(
            f"unet_stop must be None or an integer from 1 to unet_steps "
            f"({config.unet_steps}), got {stop!r}"
        )
    if not config.lr >= 0:
        raise InvalidValue(f"lr must be >= 0, got {config.lr!r}")
    minutes = config.max_minutes
    if not (minutes is None or minutes > 0):
        raise InvalidValue(f"max_minutes must be None or > 0, got {minutes!r}")
