"""Loading SD 1.5 into a minsd pipeline, from a diffusers-format folder.

A diffusers folder holds model_index.json and unet/, vae/, text_encoder/, tokenizer/,
scheduler/. Its configs are read and checked first (minsd/configs.py); then each weights
file's header; then the weights. minsd's own UNet is built from its config and takes
its weights with load_state_dict(strict=True): every tensor of the file fits one of its
parameters, and every parameter comes from the file. The VAE and the CLIP text encoder
load with diffusers and transformers, under the same check.

The weights may also be named by a hub id (downloaded; minsd/weights.py) or be one
.safetensors checkpoint in the original SD layout (minsd/single_file.py). Only
safetensors files are read: nothing is unpickled.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file

from .checks import resolve_device, resolve_dtype
from .configs import check_layout, load_tokenizer, read_configs, read_unet_config
from .pipeline import StableDiffusion
from .single_file import load_single_file
from .unet import UNet, UNetConfig
from .weights import (
    TEXT_ENCODER_WEIGHTS,
    UNET_WEIGHTS,
    WEIGHTS_ENV,
    check_config_argument,
    check_path_argument,
    check_state_dict_shapes,
    find_weights,
    from_pretrained_checked,
    read_safetensors_header,
    weights_file,
)

# the tiny shapes model minsd ships (see train.py)
DEFAULT_MODEL = Path(__file__).parent / "default_model"


def load_pipeline(
    weights: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    config: str | os.PathLike | None = None,
) -> StableDiffusion:
    """Load SD 1.5 from a diffusers folder, a hub id or one .safetensors checkpoint.

    weights: a folder, a hub id (owner/name), a .safetensors file in the original SD
        layout, or None for $MINSD_WEIGHTS; with neither, minsd's own tiny default
        model (coloured shapes, 32 x 32; see minsd/train.py), with a one-line notice.
    device, dtype: default to CUDA in fp16 when present, else the CPU in fp32.
    config: for a single file only, a diffusers-format folder of its configs
        (default: SD 1.5's).
    """
    device = resolve_device(device)  # every argument is checked before any file is read
    dtype = resolve_dtype(dtype, device)
    check_path_argument("weights", weights)
    check_path_argument("config", config)
    weights = weights or os.environ.get(WEIGHTS_ENV) or None
    if weights is None:
        print(
            f"minsd: no SD 1.5 weights configured ({WEIGHTS_ENV} or --weights); using "
            "the default model, a tiny SD trained on coloured shapes",
            file=sys.stderr,
        )
        weights = DEFAULT_MODEL
    path = find_weights(weights, fp16=dtype == torch.float16)
    check_config_argument(config, path)
    with quiet_libraries():
        if path.is_dir():
            parts = load_folder(path, dtype)
        else:
            parts = load_single_file(path, config)
    name = "minsd default (shapes)" if Path(weights) == DEFAULT_MODEL else str(weights)
    return StableDiffusion(**parts, device=device, dtype=dtype, name=name)


def load_folder(folder: Path, dtype: torch.dtype) -> dict:
    """The parts of a diffusers folder: every config and weights header checked before
    any weight is read."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    check_layout(folder)
    configs = read_configs(folder)
    tokenizer = load_tokenizer(folder / "tokenizer", configs)
    # the fp16 files, where the folder has them and the pipeline runs in fp16
    has_fp16_files = (folder / "unet" / UNET_WEIGHTS.format(variant=".fp16")).is_file()
    variant = "fp16" if dtype == torch.float16 and has_fp16_files else None
    unet_path = weights_file(folder / "unet", UNET_WEIGHTS, variant, "UNet")
    vae_path = weights_file(folder / "vae", UNET_WEIGHTS, variant, "VAE")
    text_encoder_path = weights_file(
        folder / "text_encoder", TEXT_ENCODER_WEIGHTS, variant, "text encoder"
    )

    unet = unet_from_file(configs.unet, unet_path)
    files = dict(use_safetensors=True, variant=variant)
    # low_cpu_mem_usage=False: the default needs `accelerate`, and without it
    # diffusers prints a warning
    vae = from_pretrained_checked(
        AutoencoderKL,
        vae_path,
        folder / "vae",
        **files,
        torch_dtype=dtype,
        low_cpu_mem_usage=False,
    )
    text_encoder = from_pretrained_checked(
        CLIPTextModel, text_encoder_path, folder / "text_encoder", **files, dtype=dtype
    )
    return configs.pipeline_parts(unet, vae, text_encoder, tokenizer)


def load_unet(folder: Path, variant: str | None = None) -> UNet:
    """minsd's UNet from a diffusers unet/ folder, with every key and shape checked."""
    config = read_unet_config(folder / "config.json")
    return unet_from_file(config, weights_file(folder, UNET_WEIGHTS, variant, "UNet"))


def unet_from_file(config: UNetConfig, path: Path) -> UNet:
    """The UNet of config with the weights in path: every name and shape compared
    before any weight is read, then loaded strictly."""
    # built without allocating or initialising: the weights replace everything
    with torch.device("meta"):
        unet = UNet(config)
    check_state_dict_shapes(
        unet, read_safetensors_header(path), str(path), "an SD 1.5 UNet"
    )
    unet.load_state_dict(load_file(path), strict=True, assign=True)
    return unet


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence transformers' and diffusers' progress bars and load reports: in a
    notebook the bars land on the page, and every problem a report names is raised
    here as an error."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (transformers_logging, diffusers_logging)
    saved = [
        (library.is_progress_bar_enabled(), library.get_verbosity())
        for library in libraries
    ]
    for library in libraries:
        library.disable_progress_bar()
        library.set_verbosity_error()
    try:
        yield
    finally:
        for library, (bars, verbosity) in zip(libraries, saved):
            library.set_verbosity(verbosity)
            if bars:
                library.enable_progress_bar()
