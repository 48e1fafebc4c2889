"""Loading SD 1.5 into a minsd pipeline: a diffusers-format folder, a hub id, or one
.safetensors checkpoint.

A diffusers folder holds model_index.json and unet/, vae/, text_encoder/, tokenizer/,
scheduler/. A single-file checkpoint (the original CompVis layout most SD 1.5 fine-tunes
circulate in) holds weights only: diffusers' single-file code converts its keys, and its
configs come from a folder, SD 1.5's (shipped in minsd/sd15_config/) or the one passed
as `config`.

Everything is checked before anything runs, cheapest first: the arguments before any
file is read; then every config, each field that changes the function against the values
minsd implements and the parts against each other; then every weights file's header;
then the weights. The UNet's weights load into minsd's own UNet with strict key and
shape checks; the VAE and the text encoder load with diffusers and transformers, every
tensor of the file used and every parameter taken from it. Each error names the file,
the field or value, and what is allowed. Only safetensors files are read: nothing is
unpickled.
"""

import json
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .checks import is_integer, resolve_device, resolve_dtype
from .denoiser import scaled_linear_alphas_cumprod
from .pipeline import StableDiffusion
from .unet import UNet, UNetConfig

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

DEFAULT_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# the tiny shapes model minsd ships (see train.py)
DEFAULT_MODEL = Path(__file__).parent / "default_model"
# SD 1.5's configs, no weights: for single-file checkpoints
SD15_CONFIG = Path(__file__).parent / "sd15_config"
# SD 1.5's tokenizer is CLIP's, the one the default model ships; the default model
# reads 16 tokens, SD 1.5 77.
SD15_TOKENIZER, SD15_MAX_TOKENS = DEFAULT_MODEL / "tokenizer", 77
WEIGHTS_ENV = "MINSD_WEIGHTS"
UNET_WEIGHTS = "diffusion_pytorch_model{variant}.safetensors"
TEXT_ENCODER_WEIGHTS = "model{variant}.safetensors"
# torch.save files: loading one can run any code in it
PICKLED = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name
REQUIRED = {
    "unet": ["config.json"],
    "vae": ["config.json"],
    "text_encoder": ["config.json"],
    "tokenizer": [],
    "scheduler": ["scheduler_config.json"],
}

# Every field of diffusers' UNet2DConditionModel config that changes the function, at
# the one value minsd's UNet implements: SD 1.5's, which is also diffusers' default
# for each, so a missing field is fine.
SD15_UNET = {
    "center_input_sample": False,  # no 2 x - 1 on the input
    "flip_sin_to_cos": True,  # the timestep embedding is [cos, sin]
    "freq_shift": 0,  # frequencies exp(-log(10000) i / half), not / (half - shift)
    "time_embedding_type": "positional",  # sinusoidal, not Fourier features
    "time_embedding_dim": None,  # 4 * block_out_channels[0]
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,  # no guidance-scale input (LCM)
    "act_fn": "silu",
    "norm_eps": 1e-5,  # the ResNets' GroupNorm; the transformers' is fixed at 1e-6
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "downsample_padding": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "mid_block_scale_factor": 1,
    # the time embedding is added, not a scale and shift
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "transformer_layers_per_block": 1,
    "reverse_transformer_layers_per_block": None,
    # diffusers reads the number of heads from attention_head_dim
    "num_attention_heads": None,
    # proj_in / proj_out are 1x1 convolutions (SD 2.x: linear)
    "use_linear_projection": False,
    "only_cross_attention": False,
    "mid_block_only_cross_attention": None,
    "dual_cross_attention": False,
    "upcast_attention": False,
    "cross_attention_norm": None,
    "attention_type": "default",  # no GLIGEN gated attention
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "class_embed_type": None,
    "num_class_embeds": None,
    "class_embeddings_concat": False,
    "projection_class_embeddings_input_dim": None,
    "addition_embed_type": None,  # SDXL: "text_time", extra size and text embeddings
    "addition_time_embed_dim": None,
    "addition_embed_type_num_heads": 64,
}
# The sizes minsd's UNetConfig reads, with diffusers' default where one is missing
# (not all SD 1.5's: diffusers' cross_attention_dim is 1280 and its sample_size None).
UNET_SIZES = {
    "sample_size": None,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": 8,  # the NUMBER of heads in SD 1.x, a historical misnomer
    "cross_attention_dim": 1280,
    "norm_num_groups": 32,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
}
UNET_IGNORED = ["dropout"]  # acts only in training; minsd samples in eval mode

# The scheduler config's fields that change the training noise schedule or what the
# network predicts, at SD 1.5's values. Its sampling fields (timestep_spacing,
# steps_offset, use_karras_sigmas, ...) are not read: minsd chooses its own sampler
# and spacing.
SD15_SCHEDULE = {
    # betas = linspace(sqrt(beta_start), sqrt(beta_end), N)^2
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "rescale_betas_zero_snr": False,
    "prediction_type": "epsilon",  # not "v_prediction" (SD 2.x-768) or "sample"
    # not "continuous" (the network reads t, not log sigma)
    "timestep_type": "discrete",
}
SCHEDULE_DEFAULTS = {
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "num_train_timesteps": 1000,
}


def load_pipeline(
    weights: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    config: str | os.PathLike | None = None,
) -> StableDiffusion:
    """Load SD 1.5 from a diffusers folder, a hub id or a single .safetensors
    checkpoint.

    weights: a folder, a hub id (owner/name), a .safetensors file in the original SD
    layout, or None for $MINSD_WEIGHTS; with neither, minsd's own tiny default model
    (coloured shapes, 32 x 32; see `minsd/train.py`), with a one-line notice. device
    / dtype: default to CUDA in fp16 when present, else the CPU in fp32. config: for
    a single file only, a diffusers-format folder with its configs (default: SD
    1.5's).
    """
    device = resolve_device(device)  # every argument is checked before any file is read
    dtype = resolve_dtype(dtype, device)
    check_path_argument("weights", weights)
    check_path_argument("config", config)
    weights = weights or os.environ.get(WEIGHTS_ENV) or None
    if weights is None:
        print(
            f"minsd: no SD 1.5 weights configured ({WEIGHTS_ENV} or --weights); using the default model, "
            "a tiny SD trained on coloured shapes",
            file=sys.stderr,
        )
        weights = DEFAULT_MODEL
    path = find_weights(weights, fp16=dtype == torch.float16)
    if config is not None and path.is_dir():
        raise ValueError(
            f"config is for single-file checkpoints; {path} is a folder with its own configs"
        )
    if config is not None and not Path(config).expanduser().is_dir():
        raise FileNotFoundError(
            f"config must be a diffusers-format folder of configs; {config} is not a folder"
        )
    with quiet_libraries():
        if path.is_dir():
            parts = load_folder(path, dtype)
        else:
            parts = load_single_file(
                path, SD15_CONFIG if config is None else Path(config).expanduser()
            )
    name = "minsd default (shapes)" if Path(weights) == DEFAULT_MODEL else str(weights)
    return StableDiffusion(**parts, device=device, dtype=dtype, name=name)


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence transformers' and diffusers' progress bars and load reports: in a
    notebook the bars land on
    the page, and every problem a report names is raised here as an error."""
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


# --------------------------------------------------------------------------------------
# Where the weights are


def check_path_argument(name: str, value: object) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{name} must be None or a path or hub id (a str or os.PathLike), got {type(value).__name__}: {value!r:.80}"
        )
    if isinstance(value, str) and not value.strip():
        raise ValueError(
            f"{name} is an empty string; give a folder, a .safetensors file or a hub id, or None"
        )


def find_weights(weights: str | os.PathLike, fp16: bool = False) -> Path:
    """A local folder or .safetensors file; else, if the name can be a hub id
    (owner/name), its download."""
    path = Path(weights).expanduser()
    if path.is_file() and path.suffix in PICKLED:
        raise ValueError(
            f"{path} is a pickled checkpoint, and minsd never unpickles (loading a pickle can run any code in "
            "it). Convert it where you trust it (e.g. in a sandbox: safetensors.torch.save_file of its "
            "state_dict, or diffusers' scripts/convert_original_stable_diffusion_to_diffusers.py) and pass "
            "the .safetensors file or the folder"
        )
    if path.is_file() and path.suffix != ".safetensors":
        raise NotADirectoryError(
            f"weights must be a diffusers-format folder or a .safetensors checkpoint, but {path} is another file"
        )
    if path.exists():
        return path
    name = str(weights)
    if not HUB_ID.fullmatch(name) or name.endswith((".safetensors", *PICKLED)):
        raise FileNotFoundError(
            f"{name!r} is not a local folder, and it could not be downloaded: no such file or folder "
            f"({path.absolute()}), and it cannot be a Hugging Face hub repository id (owner/name)"
        )
    print(
        f"minsd: {name} is not a local folder (no such path: {path.absolute()}); "
        "trying it as a Hugging Face hub repository id",
        file=sys.stderr,
    )
    return download(name, path.absolute(), fp16)


def download(repo_id: str, local: Path, fp16: bool) -> Path:
    """The hub repository's diffusers folder (safetensors only), downloaded or from the
    local cache."""
    from huggingface_hub import snapshot_download

    variant = ".fp16" if fp16 else ""
    patterns = [
        "model_index.json",
        "*/config.json",
        "scheduler/scheduler_config.json",
        "tokenizer/*",
        f"unet/{UNET_WEIGHTS.format(variant=variant)}",
        f"vae/{UNET_WEIGHTS.format(variant=variant)}",
        f"text_encoder/{TEXT_ENCODER_WEIGHTS.format(variant=variant)}",
    ]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    # offline, unknown repository, no access: all mean "no weights here"
    except Exception as err:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local folder (no such path: {local}), and it could not be downloaded from the "
            f"Hugging Face hub as a repository id ({type(err).__name__}: {one_line(err)}). On a machine with "
            f"internet access run `hf download {repo_id} --include {' '.join(repr(p) for p in patterns)} "
            f"--local-dir sd15`, then pass the folder (--weights sd15) or set {WEIGHTS_ENV}=sd15"
        ) from err


def one_line(err: BaseException) -> str:
    """A library's error message on one line: the command line prints each error as
    one."""
    return " ".join(str(err).split())


# --------------------------------------------------------------------------------------
# A diffusers folder, and a single-file checkpoint


def load_folder(folder: Path, dtype: torch.dtype) -> dict:
    """The parts of a diffusers folder: every config and weights header checked before
    any weight is read."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    check_layout(folder)
    configs = read_configs(folder)
    tokenizer = load_tokenizer(folder / "tokenizer", configs)
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
    return dict(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        alphas_cumprod=configs.alphas_cumprod,
        preview_factors=configs.preview_factors,
    )


def load_single_file(path: Path, config_folder: Path) -> dict:
    """The parts of an SD 1.x checkpoint in one .safetensors file, in the original
    CompVis (LDM) key layout, with their configs from config_folder. diffusers'
    single-file code converts the keys to diffusers'
    names; minsd then checks every key and shape, as for a folder."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import (
        LDM_CLIP_PREFIX_TO_REMOVE,
        LDM_UNET_KEY,
        LDM_VAE_KEYS,
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    # minsd's own; its tokenizer is the default model's, read up to 77 tokens
    if config_folder == SD15_CONFIG:
        configs = read_configs(config_folder)
        tokenizer = load_tokenizer(
            SD15_TOKENIZER, configs, model_max_length=SD15_MAX_TOKENS
        )
    else:
        check_layout(config_folder)
        configs = read_configs(config_folder)
        tokenizer = load_tokenizer(config_folder / "tokenizer", configs)
    keys = read_safetensors_header(path).keys()
    parts = {
        "UNet": [LDM_UNET_KEY],
        "VAE": LDM_VAE_KEYS,
        "text encoder": LDM_CLIP_PREFIX_TO_REMOVE,
    }
    for part, prefixes in parts.items():
        if not any(key.startswith(tuple(prefixes)) for key in keys):
            raise ValueError(
                f"{path} holds no {part} in the original SD layout (no key starts with {' or '.join(prefixes)}); "
                "minsd reads whole SD 1.x checkpoints (UNet, VAE and CLIP text encoder in one file), or "
                "diffusers-format folders"
            )
    # diffusers' test for a second, EMA copy
    if sum(key.startswith("model_ema.") for key in keys) > 100:
        warnings.warn(
            f"{path} holds the UNet's weights twice, with and without EMA; minsd loads the ones without, "
            "as diffusers does by default (SD 1.5's diffusers release holds the EMA ones)",
            stacklevel=3,
        )

    checkpoint = load_file(path)
    source = f"{path} (converted from the original SD layout by diffusers; configs from {config_folder})"
    # built without allocating: the weights replace every parameter
    with torch.device("meta"):
        unet = UNet(configs.unet)
        vae = AutoencoderKL.from_config(configs.vae)
    state = convert_ldm_unet_checkpoint(checkpoint, diffusers_unet_config(configs.unet))
    check_state_dict_shapes(
        unet, {k: tuple(v.shape) for k, v in state.items()}, source, "an SD 1.5 UNet"
    )
    unet.load_state_dict(state, strict=True, assign=True)
    state = convert_ldm_vae_checkpoint(checkpoint, dict(vae.config))
    check_state_dict_shapes(
        vae, {k: tuple(v.shape) for k, v in state.items()}, source, "an AutoencoderKL"
    )
    vae.load_state_dict(state, strict=True, assign=True)
    text_config = CLIPTextConfig.from_dict(configs.text_encoder)
    state = convert_ldm_clip_checkpoint(checkpoint)
    text_encoder = from_pretrained_checked(
        CLIPTextModel, source, None, config=text_config, state_dict=state
    )
    return dict(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        alphas_cumprod=configs.alphas_cumprod,
        preview_factors=configs.preview_factors,
    )


def check_layout(folder: Path) -> None:
    """Fail with the missing file's name if folder is not a diffusers text-to-image
    folder."""
    missing = (
        [str(folder / "model_index.json")]
        if not (folder / "model_index.json").is_file()
        else []
    )
    for sub, files in REQUIRED.items():
        if not (folder / sub).is_dir():
            missing.append(f"{folder / sub}/")
        else:
            missing += [
                str(folder / sub / f) for f in files if not (folder / sub / f).is_file()
            ]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a diffusers-format Stable Diffusion folder; missing: {', '.join(missing)}"
        )


# --------------------------------------------------------------------------------------
# The configs: each against what minsd implements, and against each other


@dataclass(frozen=True)
class Configs:
    """A model's checked configs; nothing is built from them yet."""

    folder: Path
    unet: UNetConfig
    vae: dict
    text_encoder: dict
    alphas_cumprod: torch.Tensor  # (N,) float64, the training noise schedule
    # (C, 3) latent -> RGB, if the model ships its own
    preview_factors: torch.Tensor | None


def read_configs(folder: Path) -> Configs:
    read_json(folder / "model_index.json")
    unet_path = folder / "unet" / "config.json"
    unet = unet_config_from_diffusers(read_json(unet_path), str(unet_path))
    vae = read_json(folder / "vae" / "config.json")
    check_vae_config(vae, folder / "vae" / "config.json", unet)
    text_encoder = read_json(folder / "text_encoder" / "config.json")
    check_text_encoder_config(
        text_encoder, folder / "text_encoder" / "config.json", unet
    )
    alphas_cumprod = load_alphas_cumprod(folder / "scheduler" / "scheduler_config.json")
    preview_factors = load_preview_factors(folder, unet.in_channels)
    return Configs(folder, unet, vae, text_encoder, alphas_cumprod, preview_factors)


def read_json(path: Path) -> dict:
    """A config file's JSON object; anything else is refused by the file's name."""
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise ValueError(
            f"{path} must hold a JSON object {{...}}, but it holds a {type(config).__name__}"
        )
    return config


def is_positive_int(value: object) -> bool:
    return is_integer(value) and value > 0


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def unet_config_from_diffusers(
    config: dict, source: str = "unet/config.json"
) -> UNetConfig:
    """minsd's UNetConfig from a diffusers UNet2DConditionModel config; every field
    minsd does not implement
    is refused by name (a missing field takes diffusers' default)."""
    sizes = {field: config.get(field, default) for field, default in UNET_SIZES.items()}
    problems = []
    if config.get("_class_name") != "UNet2DConditionModel":
        problems.append(
            f"_class_name={config.get('_class_name')!r} (SD 1.5: 'UNet2DConditionModel')"
        )
    channels = sizes["block_out_channels"]
    if not (
        isinstance(channels, list)
        and channels
        and all(is_positive_int(c) for c in channels)
    ):
        raise ValueError(
            f"{source}: block_out_channels={channels!r} must be a list of positive integers"
        )
    levels = len(channels)
    if sizes["down_block_types"] != ["CrossAttnDownBlock2D"] * (levels - 1) + [
        "DownBlock2D"
    ]:
        problems.append(
            f"down_block_types={sizes['down_block_types']} (SD 1.5: CrossAttnDownBlock2D on every level but the last)"
        )
    if sizes["up_block_types"] != ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1):
        problems.append(
            f"up_block_types={sizes['up_block_types']} (SD 1.5: CrossAttnUpBlock2D on every level but the first)"
        )
    for field, value in SD15_UNET.items():
        if config.get(field, value) != value:
            problems.append(f"{field}={config[field]!r} (SD 1.5: {value!r})")
    known = SD15_UNET.keys() | UNET_SIZES.keys() | set(UNET_IGNORED)
    # "_class_name", "_diffusers_version"
    unknown = [k for k in config if k not in known and not k.startswith("_")]
    problems += [f"{k}={config[k]!r} (a field minsd does not know)" for k in unknown]
    numbers = (
        "sample_size",
        "in_channels",
        "out_channels",
        "layers_per_block",
        "attention_head_dim",
    )
    numbers += ("cross_attention_dim", "norm_num_groups")
    problems += [
        f"{k}={sizes[k]!r} (must be one positive integer)"
        for k in numbers
        if not is_positive_int(sizes[k])
    ]
    if not problems:
        if sizes["out_channels"] != sizes["in_channels"]:
            problems.append(
                f"out_channels={sizes['out_channels']} differs from in_channels={sizes['in_channels']} (SD 1.5: 4 "
                "and 4; an inpainting model reads 9 channels, minsd's denoiser predicts noise of the input's shape)"
            )
        for field in ("norm_num_groups", "attention_head_dim"):
            if any(c % sizes[field] for c in channels):
                problems.append(
                    f"{field}={sizes[field]} does not divide every block_out_channels {channels}"
                )
    if problems:
        raise ValueError(
            f"{source} does not describe an SD 1.5-shaped UNet (the only one minsd implements): "
            + "; ".join(problems)
        )
    return UNetConfig(
        sample_size=sizes["sample_size"],
        in_channels=sizes["in_channels"],
        out_channels=sizes["out_channels"],
        block_out_channels=tuple(channels),
        layers_per_block=sizes["layers_per_block"],
        num_heads=sizes["attention_head_dim"],
        cross_attention_dim=sizes["cross_attention_dim"],
        norm_num_groups=sizes["norm_num_groups"],
    )


def diffusers_unet_config(cfg: UNetConfig) -> dict:
    """The diffusers UNet2DConditionModel config of a minsd UNetConfig (the inverse of
    the above)."""
    levels = len(cfg.block_out_channels)
    return {
        "_class_name": "UNet2DConditionModel",
        "sample_size": cfg.sample_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "block_out_channels": list(cfg.block_out_channels),
        "layers_per_block": cfg.layers_per_block,
        "attention_head_dim": cfg.num_heads,
        "cross_attention_dim": cfg.cross_attention_dim,
        "norm_num_groups": cfg.norm_num_groups,
        "down_block_types": ["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1),
    }


def check_vae_config(config: dict, path: Path, unet: UNetConfig) -> None:
    """An AutoencoderKL whose latents the UNet reads, scaled as SD 1.5's are (diffusers
    builds the rest)."""
    problems = []
    if config.get("_class_name") != "AutoencoderKL":
        problems.append(
            f"_class_name={config.get('_class_name')!r} (SD 1.5: 'AutoencoderKL')"
        )
    if config.get("latent_channels", 4) != unet.in_channels:
        problems.append(
            f"latent_channels={config.get('latent_channels', 4)!r}, but the UNet reads in_channels={unet.in_channels}"
        )
    problems += [
        f"{k}={config[k]!r} (RGB: 3)"
        for k in ("in_channels", "out_channels")
        if config.get(k, 3) != 3
    ]
    # later models' latent normalisations
    for field in ("shift_factor", "latents_mean", "latents_std"):
        if config.get(field) is not None:
            problems.append(
                f"{field}={config[field]!r} (SD 1.5: None; minsd only multiplies by scaling_factor)"
            )
    scaling_factor = config.get("scaling_factor", 0.18215)
    if not is_number(scaling_factor) or scaling_factor <= 0:
        problems.append(
            f"scaling_factor={scaling_factor!r} (a positive number; SD 1.5: 0.18215)"
        )
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))


def check_text_encoder_config(config: dict, path: Path, unet: UNetConfig) -> None:
    """A CLIP text model whose output width is the width the UNet's cross-attention
    reads."""
    problems = []
    if config.get("model_type") != "clip_text_model":
        problems.append(
            f"model_type={config.get('model_type')!r} (SD 1.5: 'clip_text_model', a CLIPTextModel)"
        )
    width = config.get("hidden_size", 512)  # transformers' default
    if width != unet.cross_attention_dim:
        problems.append(
            f"hidden_size={width!r}, but the UNet's cross-attention reads text of width "
            f"cross_attention_dim={unet.cross_attention_dim} (SD 1.5: 768 and 768)"
        )
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))


def load_alphas_cumprod(path: Path) -> torch.Tensor:
    """The training noise schedule from a diffusers scheduler config; every field
    that makes it another
    schedule, or another kind of network, is refused by name (a missing field takes
    diffusers' default)."""
    config = read_json(path)
    problems = []
    for field, value in SD15_SCHEDULE.items():
        found = config.get(field, SCHEDULE_DEFAULTS.get(field, value))
        if found != value:
            missing = (
                "" if field in config else ", diffusers' default for a missing field"
            )
            problems.append(f"{field}={found!r} (SD 1.5: {value!r}{missing})")
    beta_start, beta_end, n = (
        config.get(k, SCHEDULE_DEFAULTS[k])
        for k in ("beta_start", "beta_end", "num_train_timesteps")
    )
    if not (
        is_number(beta_start) and is_number(beta_end) and 0 < beta_start < beta_end < 1
    ):
        problems.append(
            f"beta_start={beta_start!r}, beta_end={beta_end!r} (0 < beta_start < beta_end < 1)"
        )
    if not is_positive_int(n) or n < 2:
        problems.append(
            f"num_train_timesteps={n!r} (an integer of at least 2; SD 1.5: 1000)"
        )
    if problems:
        raise ValueError(
            f"{path}: "
            + "; ".join(problems)
            + ". minsd implements SD 1.5's schedule: scaled_linear betas and "
            "an eps-prediction network"
        )
    return scaled_linear_alphas_cumprod(beta_start, beta_end, n)


def load_preview_factors(folder: Path, channels: int) -> torch.Tensor | None:
    """A model's own latent -> RGB factors, (channels, 3), if it ships them
    (vae/preview_factors.json)."""
    path = folder / "vae" / "preview_factors.json"
    if not path.is_file():
        return None
    try:
        factors = torch.tensor(json.loads(path.read_text()))
    except (ValueError, TypeError) as err:  # not JSON, or not a table of numbers
        raise ValueError(f"{path} is not a JSON table of numbers ({err})") from err
    if factors.shape != (channels, 3):
        raise ValueError(
            f"{path} holds a {tuple(factors.shape)} table; expected one row of (R, G, B) per latent "
            f"channel: ({channels}, 3)"
        )
    return factors


def load_tokenizer(
    folder: Path, configs: Configs, model_max_length: int | None = None
) -> "CLIPTokenizer":
    """The CLIP tokenizer in folder, checked against the text encoder it feeds."""
    from transformers import CLIPTokenizer

    has_vocabulary = (folder / "vocab.json").is_file() and (
        folder / "merges.txt"
    ).is_file()
    if not (folder / "tokenizer.json").is_file() and not has_vocabulary:
        raise FileNotFoundError(
            f"{folder} holds no CLIP tokenizer: it needs tokenizer.json, or vocab.json and merges.txt"
        )
    for path in sorted(folder.glob("*.json")):
        read_json(path)
    override = (
        {} if model_max_length is None else {"model_max_length": model_max_length}
    )
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder, **override)
    # transformers raises many types; each means "these files make no tokenizer"
    except Exception as err:
        raise ValueError(
            f"{folder}: no CLIP tokenizer could be loaded ({type(err).__name__}: {one_line(err)})"
        ) from err
    text_config = configs.folder / "text_encoder" / "config.json"
    positions = configs.text_encoder.get("max_position_embeddings", 77)
    if tokenizer.model_max_length > positions:
        raise ValueError(
            f"{folder}: model_max_length={tokenizer.model_max_length}, but the text encoder has {positions} "
            f"positions (max_position_embeddings in {text_config}; SD 1.5: 77 and 77)"
        )
    largest = max(tokenizer.get_vocab().values())
    if largest >= configs.text_encoder.get("vocab_size", 49408):
        raise ValueError(
            f"{folder}: the tokenizer's ids go up to {largest}, beyond the text encoder's vocab_size="
            f"{configs.text_encoder.get('vocab_size', 49408)} ({text_config}; SD 1.5: 49408 tokens)"
        )
    return tokenizer


# --------------------------------------------------------------------------------------
# The weights: headers first, then every key and shape


def weights_file(folder: Path, pattern: str, variant: str | None, part: str) -> Path:
    """The safetensors file of a part, its header read (a damaged file is refused before
    any weight is read)."""
    path = folder / pattern.format(variant=f".{variant}" if variant else "")
    if not path.is_file():
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED)
        hint = (
            f" ({', '.join(pickled)} exist, but minsd never unpickles; convert them to safetensors)"
            if pickled
            else ""
        )
        raise FileNotFoundError(f"no {part} weights: {path} does not exist{hint}")
    read_safetensors_header(path)
    return path


def read_safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """The names and shapes of a safetensors file's tensors, from its header; a damaged
    file is refused."""
    try:
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except SafetensorError as err:
        raise ValueError(
            f"{path} is not a readable safetensors file ({err}); is it truncated, by an interrupted download or copy?"
        ) from err


def load_unet(folder: Path, variant: str | None = None) -> UNet:
    """minsd's UNet from a diffusers unet/ folder, with every key and shape checked."""
    config = unet_config_from_diffusers(
        read_json(folder / "config.json"), str(folder / "config.json")
    )
    return unet_from_file(config, weights_file(folder, UNET_WEIGHTS, variant, "UNet"))


def unet_from_file(config: UNetConfig, path: Path) -> UNet:
    # build without allocating or initialising: the weights replace everything
    with torch.device("meta"):
        unet = UNet(config)
    check_state_dict_shapes(
        unet, read_safetensors_header(path), str(path), "an SD 1.5 UNet"
    )
    unet.load_state_dict(load_file(path), strict=True, assign=True)
    return unet


def check_state_dict_shapes(
    model: torch.nn.Module,
    found: dict[str, tuple[int, ...]],
    source: str,
    what: str,
    show: int = 5,
) -> None:
    """Compare a file's tensor names and shapes with the model's; name the first
    mismatches."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    refuse_weights(
        f"{source} does not fit {what} of this config ({len(found)} tensors, expected {len(expected)})",
        [f"shape of {k}: file {found[k]}, expected {expected[k]}" for k in wrong],
        [f"missing from the file: {k} {expected[k]}" for k in missing],
        [f"not in {what}: {k} {found[k]}" for k in unexpected],
        show,
    )


def from_pretrained_checked(
    cls: type, source: str | Path, *args: object, **kwargs: object
) -> torch.nn.Module:
    """cls.from_pretrained (diffusers or transformers) that refuses a file whose tensors
    do not all fit."""
    try:
        model, info = cls.from_pretrained(
            *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    # the libraries raise many types; each means "these files do not make this
    # model"
    except Exception as err:
        raise ValueError(
            f"{source}: no {cls.__name__} could be loaded ({type(err).__name__}: {one_line(err)})"
        ) from err
    refuse_weights(
        f"{source} does not fit the {cls.__name__} of its config",
        [
            f"shape of {k}: file {tuple(a)}, expected {tuple(b)}"
            for k, a, b in sorted(info.get("mismatched_keys", []))
        ],
        [f"missing from the file: {k}" for k in sorted(info.get("missing_keys", []))],
        [
            f"not in the {cls.__name__}: {k}"
            for k in sorted(info.get("unexpected_keys", []))
        ],
    )
    return model


def refuse_weights(
    title: str,
    wrong: list[str],
    missing: list[str],
    unexpected: list[str],
    show: int = 5,
) -> None:
    """One error listing the first few problems of each kind, if there are any."""
    lines = []
    for problems in (wrong, missing, unexpected):
        lines += [f"  {p}" for p in problems[:show]]
        lines += (
            [f"  ... and {len(problems) - show} more like it"]
            if len(problems) > show
            else []
        )
    if lines:
        raise ValueError("\n".join([f"{title}:", *lines]))
