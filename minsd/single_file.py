"""An SD 1.x checkpoint in one .safetensors file, in the original CompVis (LDM) layout:
the form most SD 1.5 fine-tunes circulate in.

The file holds weights only, under the names of CompVis' `ldm` code: the UNet under
"model.diffusion_model.", the VAE under "first_stage_model.", the CLIP text encoder
under "cond_stage_model.transformer.". diffusers' single-file code renames them to
diffusers' names, and each part loads strictly, as from a folder. The configs come from
a diffusers-format folder: SD 1.5's (minsd/sd15_config/, with the CLIP tokenizer of
minsd's default model) or the one passed as `config`.
"""

import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from .configs import SD15_CONFIG, diffusers_unet_config, read_configs
from .errors import InvalidValue
from .loading import DEFAULT_MODEL, from_pretrained, load_strict, read_header
from .unet import UNet

SD15_TOKENIZER = DEFAULT_MODEL / "tokenizer"  # CLIP's, read at SD 1.5's 77 tokens
SD15_MAX_TOKENS = 77


def load_single_file(path: Path, config: str | os.PathLike | None = None) -> dict:
    """StableDiffusion's parts from an SD 1.x checkpoint in one .safetensors file, with
    the configs in the folder config (default: SD 1.5's)."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPTextModel

    if config is None:
        folder = SD15_CONFIG
        configs = read_configs(folder, SD15_TOKENIZER, SD15_MAX_TOKENS)
    else:
        folder = Path(config).expanduser()
        configs = read_configs(folder)
    check_ldm_parts(path)

    checkpoint = load_file(path)
    source = f"{path} (converted from the original SD layout; configs from {folder})"
    with torch.device("meta"):  # nothing allocated: the weights replace everything
        unet = UNet(configs.unet)
        vae = AutoencoderKL.from_config(configs.vae)
    unet_config = diffusers_unet_config(configs.unet)
    load_strict(unet, convert_ldm_unet_checkpoint(checkpoint, unet_config), source)
    load_strict(vae, convert_ldm_vae_checkpoint(checkpoint, dict(vae.config)), source)
    state = convert_ldm_clip_checkpoint(checkpoint)
    text_config = configs.text_encoder
    text_encoder = from_pretrained(
        CLIPTextModel, source, config=text_config, state_dict=state
    )
    return configs.pipeline_parts(unet=unet, vae=vae, text_encoder=text_encoder)


def check_ldm_parts(path: Path) -> None:
    """The file holds a UNet, a VAE and a text encoder under the original key prefixes
    (read from its header); a second, EMA copy of the UNet is named."""
    from diffusers.loaders.single_file_utils import (
        LDM_CLIP_PREFIX_TO_REMOVE,
        LDM_UNET_KEY,
        LDM_VAE_KEYS,
    )

    keys = read_header(path)
    parts = {"UNet": [LDM_UNET_KEY], "VAE": LDM_VAE_KEYS}
    for part, prefixes in (parts | {"text encoder": LDM_CLIP_PREFIX_TO_REMOVE}).items():
        if not any(key.startswith(tuple(prefixes)) for key in keys):
            raise InvalidValue(
                f"{path} holds no {part} in the original SD layout (no key starts "
                f"with {' or '.join(prefixes)}); minsd reads whole SD 1.x checkpoints "
                "(UNet, VAE and CLIP text encoder in one file), or diffusers-format "
                "folders"
            )
    # diffusers' test for a second, EMA copy
    if sum(key.startswith("model_ema.") for key in keys) > 100:
        warnings.warn(
            f"{path} holds the UNet's weights twice, with and without EMA; minsd loads "
            "the ones without, as diffusers does by default (SD 1.5's diffusers "
            "release holds the EMA ones)",
            stacklevel=4,
        )
