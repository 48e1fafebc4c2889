"""An SD 1.x checkpoint in one .safetensors file, in the original CompVis (LDM) layout:
the form most SD 1.5 fine-tunes circulate in.

The file holds weights only, under the names of CompVis' `ldm` code: the UNet under
"model.diffusion_model.", the VAE under "first_stage_model.", the CLIP text encoder
under "cond_stage_model.transformer.". diffusers' single-file code renames them to
diffusers' names; minsd then checks every key and shape, as for a folder. The configs
come from a diffusers-format folder: SD 1.5's (shipped in minsd/sd15_config/, with the
CLIP tokenizer of minsd's default model) or the one passed as `config`.
"""

import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from .configs import check_layout, diffusers_unet_config, load_tokenizer, read_configs
from .unet import UNet
from .weights import (
    check_state_dict_shapes,
    from_pretrained_checked,
    read_safetensors_header,
)

# SD 1.5's configs, no weights
SD15_CONFIG = Path(__file__).parent / "sd15_config"
# SD 1.5's tokenizer is CLIP's, the one the default model ships; the default model
# reads 16 tokens, SD 1.5 77.
SD15_TOKENIZER = Path(__file__).parent / "default_model" / "tokenizer"
SD15_MAX_TOKENS = 77


def load_single_file(path: Path, config: str | os.PathLike | None = None) -> dict:
    """The parts of an SD 1.x checkpoint in one .safetensors file, with the configs in
    the folder config (default: SD 1.5's)."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    if config is None:
        config_folder = SD15_CONFIG
        configs = read_configs(config_folder)
        tokenizer = load_tokenizer(SD15_TOKENIZER, configs, SD15_MAX_TOKENS)
    else:
        config_folder = Path(config).expanduser()
        check_layout(config_folder)
        configs = read_configs(config_folder)
        tokenizer = load_tokenizer(config_folder / "tokenizer", configs)
    check_ldm_parts(path)

    checkpoint = load_file(path)
    source = (
        f"{path} (converted from the original SD layout by diffusers; configs from "
        f"{config_folder})"
    )
    # built without allocating: the weights replace every parameter
    with torch.device("meta"):
        unet = UNet(configs.unet)
        vae = AutoencoderKL.from_config(configs.vae)
    state = convert_ldm_unet_checkpoint(checkpoint, diffusers_unet_config(configs.unet))
    load_checked(unet, state, source, "an SD 1.5 UNet")
    state = convert_ldm_vae_checkpoint(checkpoint, dict(vae.config))
    load_checked(vae, state, source, "an AutoencoderKL")
    text_config = CLIPTextConfig.from_dict(configs.text_encoder)
    state = convert_ldm_clip_checkpoint(checkpoint)
    text_encoder = from_pretrained_checked(
        CLIPTextModel, source, None, config=text_config, state_dict=state
    )
    return configs.pipeline_parts(unet, vae, text_encoder, tokenizer)


def check_ldm_parts(path: Path) -> None:
    """The file holds a UNet, a VAE and a text encoder under the original key prefixes
    (read from its header); a second, EMA copy of the UNet is named."""
    from diffusers.loaders.single_file_utils import (
        LDM_CLIP_PREFIX_TO_REMOVE,
        LDM_UNET_KEY,
        LDM_VAE_KEYS,
    )

    keys = read_safetensors_header(path).keys()
    parts = {
        "UNet": [LDM_UNET_KEY],
        "VAE": LDM_VAE_KEYS,
        "text encoder": LDM_CLIP_PREFIX_TO_REMOVE,
    }
    for part, prefixes in parts.items():
        if not any(key.startswith(tuple(prefixes)) for key in keys):
            raise ValueError(
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


def load_checked(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, what: str
) -> None:
    """model.load_state_dict(state), strict, after every name and shape is compared
    (a mismatch is refused with the first few named)."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    check_state_dict_shapes(model, shapes, source, what)
    model.load_state_dict(state, strict=True, assign=True)
