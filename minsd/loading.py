"""Loading SD 1.5 into a minsd pipeline, from local files: a diffusers-format folder,
or one .safetensors checkpoint in the original CompVis layout. Nothing is downloaded.

Everything is checked before any weight is read: the arguments, the configs and the
tokenizer (configs.py), each weights file's header. minsd's UNet takes its weights with
torch's load_state_dict(strict=True), whose error names every missing, unexpected and
misshapen tensor. diffusers and transformers would initialise a missing weight of the
VAE or the text encoder at random: their loading info is refused the same way.
"""

import os
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from .checks import (
    check_config_argument,
    check_path_argument,
    resolve_device,
    resolve_dtype,
)
from .choices import WEIGHTS_ENV
from .configs import (
    SD15_CONFIG,
    diffusers_unet_config,
    read_configs,
    read_unet_config,
    refuse,
)
from .errors import InvalidValue, MissingFile
from .pipeline import StableDiffusion
from .unet import UNet, UNetConfig

DEFAULT_MODEL = Path(__file__).parent / "default_model"  # the tiny shapes model
# each part's weights file in a diffusers folder; {} is the variant, "" or ".fp16"
WEIGHTS = dict(unet="diffusion_pytorch_model{}.safetensors")
WEIGHTS |= dict(vae=WEIGHTS["unet"], text_encoder="model{}.safetensors")
PICKLED = (".ckpt", ".pt", ".pth", ".bin", ".pkl")  # torch.save files: never read
# SD 1.5's diffusers folder, the files minsd reads, on a machine with internet access
SD15_DOWNLOAD = (
    "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir sd15 "
    "--include '*/config.json' 'model_index.json' 'scheduler/*' 'tokenizer/*' "
    "'*/diffusion_pytorch_model.safetensors' 'text_encoder/model.safetensors'"
)


def load_pipeline(
    weights: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    config: str | os.PathLike | None = None,
) -> StableDiffusion:
    """Load SD 1.5 from a diffusers folder or one .safetensors checkpoint.

    weights: a folder, a .safetensors file in the original SD layout, or None for
        $MINSD_WEIGHTS; with neither, minsd's own tiny default model (coloured
        shapes, 32 x 32; see minsd/train.py), with a one-line notice.
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
    path = find_weights(weights)
    check_config_argument(config, path)
    if path.is_dir():
        parts = load_folder(path, dtype)
    else:
        parts = load_single_file(path, config)
    name = "minsd default (shapes)" if Path(weights) == DEFAULT_MODEL else str(weights)
    return StableDiffusion(**parts, device=device, dtype=dtype, name=name)


def load_folder(folder: Path, dtype: torch.dtype) -> dict:
    """StableDiffusion's parts from a diffusers folder: its configs, then each part
    built from its config and given its weights (the fp16 files, where the folder has
    them and the pipeline runs in fp16)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    parts = read_configs(folder)
    fp16 = (folder / "unet" / WEIGHTS["unet"].format(".fp16")).is_file()
    variant = "fp16" if dtype == torch.float16 and fp16 else None
    vae_file = weights_file(folder / "vae", variant)
    text_encoder_file = weights_file(folder / "text_encoder", variant)
    parts["unet"] = load_unet(folder / "unet", variant, parts["unet"])
    files = dict(variant=variant, use_safetensors=True)
    # low_cpu_mem_usage=False: the default needs `accelerate`, and warns without it
    vae_options = dict(torch_dtype=dtype, low_cpu_mem_usage=False)
    parts["vae"] = from_pretrained(AutoencoderKL, vae_file, **files, **vae_options)
    parts["text_encoder"] = from_pretrained(
        CLIPTextModel, text_encoder_file, **files, dtype=dtype
    )
    return parts


def load_unet(
    folder: Path, variant: str | None = None, config: UNetConfig | None = None
) -> UNet:
    """minsd's UNet from a diffusers unet/ folder (and its config, if read already)."""
    path = weights_file(folder, variant)
    with torch.device("meta"):  # nothing allocated: the weights replace everything
        unet = UNet(config or read_unet_config(folder / "config.json"))
    load_strict(unet, load_file(path), path)
    return unet


def load_single_file(path: Path, config: str | os.PathLike | None = None) -> dict:
    """StableDiffusion's parts from an SD 1.x checkpoint in one .safetensors file, in
    the layout of CompVis' `ldm` code (the form most SD 1.5 fine-tunes circulate in):
    the UNet under "model.diffusion_model.", the VAE under "first_stage_model.", the
    text encoder under "cond_stage_model.transformer.". diffusers' single-file code
    renames them, and each part loads strictly. The configs come from the folder
    config, else SD 1.5's."""
    from diffusers import AutoencoderKL
    from diffusers.loaders import single_file_utils as ldm
    from transformers import CLIPTextModel

    folder = SD15_CONFIG if config is None else Path(config).expanduser()
    parts = read_configs(folder)
    keys = read_header(path)
    layout = dict(UNet=[ldm.LDM_UNET_KEY], VAE=ldm.LDM_VAE_KEYS)
    layout["text encoder"] = ldm.LDM_CLIP_PREFIX_TO_REMOVE
    for part, prefixes in layout.items():
        if not any(key.startswith(tuple(prefixes)) for key in keys):
            raise InvalidValue(
                f"{path} holds no {part} in the original SD layout (no key starts "
                f"with {' or '.join(prefixes)}); minsd reads whole SD 1.x checkpoints "
                "(UNet, VAE and CLIP text encoder in one file), or diffusers folders"
            )
    checkpoint = load_file(path)
    source = f"{path} (converted from the original SD layout; configs from {folder})"
    with torch.device("meta"):  # nothing allocated: the weights replace everything
        unet = UNet(parts["unet"])
        vae = AutoencoderKL.from_config(parts["vae"])
    unet_config = diffusers_unet_config(parts["unet"])
    load_strict(unet, ldm.convert_ldm_unet_checkpoint(checkpoint, unet_config), source)
    vae_state = ldm.convert_ldm_vae_checkpoint(checkpoint, dict(vae.config))
    load_strict(vae, vae_state, source)
    text_state = ldm.convert_ldm_clip_checkpoint(checkpoint)
    text_config = parts["text_encoder"]
    text_encoder = from_pretrained(
        CLIPTextModel, source, config=text_config, state_dict=text_state
    )
    return parts | dict(unet=unet, vae=vae, text_encoder=text_encoder)


def load_strict(model: nn.Module, state: dict, source: object) -> None:
    """model.load_state_dict(state, strict=True), its error raised with the file."""
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        name = type(model).__name__
        raise InvalidValue(
            f"{source} does not fit the {name} of its config: {err}"
        ) from err


def from_pretrained(cls: type, source: Path | str, **options: object) -> nn.Module:
    """cls.from_pretrained (diffusers or transformers) of the file source, or of
    options' state_dict, refused unless every tensor fits."""
    folder = None if "state_dict" in options else Path(source).parent
    model, info = cls.from_pretrained(
        folder, output_loading_info=True, ignore_mismatched_sizes=True, **options
    )
    name = cls.__name__
    problems = [f"missing from the file: {k}" for k in sorted(info["missing_keys"])]
    problems += [f"not in the {name}: {k}" for k in sorted(info["unexpected_keys"])]
    problems += [
        f"shape of {k}: file {tuple(a)}, expected {tuple(b)}"
        for k, a, b in sorted(info["mismatched_keys"])
    ]
    refuse(f"{source} does not fit the {name} of its config", problems)
    return model


# -- where the weights are -------------------------------------------------------------


def find_weights(weights: str | os.PathLike) -> Path:
    """A local folder or .safetensors file (never a pickle)."""
    path = Path(weights).expanduser()
    if not path.exists():
        raise MissingFile(
            f"{str(weights)!r}: no such file or folder ({path.absolute()}). minsd "
            "reads local weights only (a diffusers-format folder or a .safetensors "
            f"checkpoint) and downloads nothing; for SD 1.5's, run `{SD15_DOWNLOAD}` "
            "where there is internet, then pass --weights sd15 or set "
            f"{WEIGHTS_ENV}=sd15"
        )
    if path.is_file() and path.suffix in PICKLED:
        raise InvalidValue(
            f"{path} is a pickled checkpoint, and minsd never unpickles (loading a "
            "pickle can run any code in it). Convert it where you trust it (e.g. in a "
            "sandbox: safetensors.torch.save_file of its state_dict, or diffusers' "
            "scripts/convert_original_stable_diffusion_to_diffusers.py)"
        )
    if path.is_file() and path.suffix != ".safetensors":
        raise InvalidValue(
            "weights must be a diffusers-format folder or a .safetensors checkpoint, "
            f"but {path} is another file"
        )
    return path


def weights_file(folder: Path, variant: str | None) -> Path:
    """A part's safetensors file in a diffusers folder, its header read."""
    path = folder / WEIGHTS[folder.name].format(f".{variant}" if variant else "")
    if not path.is_file():
        pickled = ", ".join(p.name for p in folder.glob("*") if p.suffix in PICKLED)
        hint = f" ({pickled} exist, but minsd never unpickles)" if pickled else ""
        raise MissingFile(f"no {folder.name} weights: {path} does not exist{hint}")
    read_header(path)
    return path


def read_header(path: Path) -> list[str]:
    """The names of a safetensors file's tensors, from its header: a damaged file is
    refused before any weight is read."""
    try:
        with safe_open(path, framework="pt") as f:
            return list(f.keys())
    except SafetensorError as err:
        raise InvalidValue(
            f"{path} is not a readable safetensors file ({err}); is it truncated, by "
            "an interrupted download or copy?"
        ) from err
