"""A model's configs and tokenizer, each checked against what minsd implements and the
parts against each other, before any weight is read.

minsd implements one UNet, SD 1.5's, at any size: SD15_UNET holds every field of a
diffusers UNet2DConditionModel config that changes the function, at SD 1.5's value, and
UNET_SIZES the sizes minsd reads. diffusers and transformers build the VAE and the text
encoder from their configs; here they are checked to fit the UNet (the latents it reads,
the width of its text). The scheduler config gives the training noise schedule only.
A missing field takes diffusers' default. Each error names the file, the field and its
value, and what is allowed.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .checks import is_number, is_positive_integer, is_sequence
from .denoiser import scaled_linear_alphas_cumprod
from .unet import UNetConfig
from .weights import one_line

if TYPE_CHECKING:
    from transformers import CLIPTokenizer


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

    def pipeline_parts(
        self,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        text_encoder: torch.nn.Module,
        tokenizer: "CLIPTokenizer",
    ) -> dict:
        """The keyword arguments of StableDiffusion(...): the loaded modules and what
        these configs add (the training schedule, the preview factors)."""
        return dict(
            unet=unet,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            alphas_cumprod=self.alphas_cumprod,
            preview_factors=self.preview_factors,
        )


def read_configs(folder: Path) -> Configs:
    """Every config of a diffusers-format folder, checked; the VAE's latents and the
    text encoder's width checked against what the UNet reads."""
    read_json(folder / "model_index.json")
    unet = read_unet_config(folder / "unet" / "config.json")
    vae_path = folder / "vae" / "config.json"
    vae = read_json(vae_path)
    check_vae_config(vae, vae_path, unet)
    text_encoder_path = folder / "text_encoder" / "config.json"
    text_encoder = read_json(text_encoder_path)
    check_text_encoder_config(text_encoder, text_encoder_path, unet)
    alphas_cumprod = read_alphas_cumprod(folder / "scheduler" / "scheduler_config.json")
    preview_factors = read_preview_factors(folder, unet.in_channels)
    return Configs(folder, unet, vae, text_encoder, alphas_cumprod, preview_factors)


# --------------------------------------------------------------------------------------
# The UNet

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


def read_unet_config(path: Path) -> UNetConfig:
    """minsd's UNetConfig from a diffusers unet/config.json."""
    # diffusers writes _class_name into every config.json it saves: a file without
    # one is refused as _class_name=None
    return unet_config_from_diffusers(
        {"_class_name": None} | read_json(path), str(path)
    )


def unet_config_from_diffusers(
    config: Mapping[str, object], source: str = "the UNet config"
) -> UNetConfig:
    """minsd's UNetConfig from a diffusers UNet2DConditionModel config: a config.json's
    object (lists) or a model's `.config` (tuples, and no _class_name). Every field
    minsd does not implement is refused by name."""
    sizes = {field: config.get(field, default) for field, default in UNET_SIZES.items()}
    problems = []
    class_name = config.get("_class_name", "UNet2DConditionModel")
    if class_name != "UNet2DConditionModel":
        problems.append(f"_class_name={class_name!r} (SD 1.5: 'UNet2DConditionModel')")
    channels = sizes["block_out_channels"]
    if not (
        is_sequence(channels)
        and channels
        and all(is_positive_integer(c) for c in channels)
    ):
        raise ValueError(
            f"{source}: block_out_channels={channels!r} must be a list or tuple of "
            "positive integers, one per level"
        )
    levels = len(channels)
    sd15_down = ["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"]
    sd15_up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1)
    down, up = sizes["down_block_types"], sizes["up_block_types"]
    if not (is_sequence(down) and list(down) == sd15_down):
        problems.append(
            f"down_block_types={down!r} (SD 1.5: CrossAttnDownBlock2D on every level "
            "but the last)"
        )
    if not (is_sequence(up) and list(up) == sd15_up):
        problems.append(
            f"up_block_types={up!r} (SD 1.5: CrossAttnUpBlock2D on every level but "
            "the first)"
        )
    for field, value in SD15_UNET.items():
        if config.get(field, value) != value:
            problems.append(f"{field}={config[field]!r} (SD 1.5: {value!r})")
    known = SD15_UNET.keys() | UNET_SIZES.keys() | set(UNET_IGNORED)
    # diffusers' bookkeeping: _class_name, _diffusers_version, a .config's
    # _use_default_values
    unknown = [k for k in config if k not in known and not k.startswith("_")]
    problems += [f"{k}={config[k]!r} (a field minsd does not know)" for k in unknown]
    counts = ["sample_size", "in_channels", "out_channels", "layers_per_block"]
    counts += ["attention_head_dim", "cross_attention_dim", "norm_num_groups"]
    problems += [
        f"{k}={sizes[k]!r} (must be one positive integer)"
        for k in counts
        if not is_positive_integer(sizes[k])
    ]
    if not problems:
        if sizes["out_channels"] != sizes["in_channels"]:
            problems.append(
                f"out_channels={sizes['out_channels']} differs from "
                f"in_channels={sizes['in_channels']} (SD 1.5: 4 and 4; an inpainting "
                "model reads 9 channels, minsd's denoiser predicts noise of the "
                "input's shape)"
            )
        for field in ("norm_num_groups", "attention_head_dim"):
            if any(c % sizes[field] for c in channels):
                problems.append(
                    f"{field}={sizes[field]} does not divide every "
                    f"block_out_channels {channels}"
                )
    if problems:
        raise ValueError(
            f"{source} does not describe an SD 1.5-shaped UNet (the only one minsd "
            "implements): " + "; ".join(problems)
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
    unet_config_from_diffusers)."""
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


# --------------------------------------------------------------------------------------
# The VAE and the text encoder: do they fit the UNet?


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
            f"latent_channels={config.get('latent_channels', 4)!r}, but the UNet "
            f"reads in_channels={unet.in_channels}"
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
                f"{field}={config[field]!r} (SD 1.5: None; minsd only multiplies by "
                "scaling_factor)"
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
            f"model_type={config.get('model_type')!r} (SD 1.5: 'clip_text_model', a "
            "CLIPTextModel)"
        )
    width = config.get("hidden_size", 512)  # transformers' default
    if width != unet.cross_attention_dim:
        problems.append(
            f"hidden_size={width!r}, but the UNet's cross-attention reads text of "
            f"width cross_attention_dim={unet.cross_attention_dim} (SD 1.5: 768 and "
            "768)"
        )
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))


def load_tokenizer(
    folder: Path, configs: Configs, model_max_length: int | None = None
) -> "CLIPTokenizer":
    """The CLIP tokenizer in folder, checked against the text encoder it feeds: no
    more tokens than it has positions, no id beyond its vocabulary."""
    from transformers import CLIPTokenizer

    has_vocabulary = (folder / "vocab.json").is_file() and (
        folder / "merges.txt"
    ).is_file()
    if not (folder / "tokenizer.json").is_file() and not has_vocabulary:
        raise FileNotFoundError(
            f"{folder} holds no CLIP tokenizer: it needs tokenizer.json, or vocab.json "
            "and merges.txt"
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
            f"{folder}: no CLIP tokenizer could be loaded ({type(err).__name__}: "
            f"{one_line(err)})"
        ) from err
    text_config = configs.folder / "text_encoder" / "config.json"
    positions = configs.text_encoder.get("max_position_embeddings", 77)
    if tokenizer.model_max_length > positions:
        raise ValueError(
            f"{folder}: model_max_length={tokenizer.model_max_length}, but the text "
            f"encoder has {positions} positions (max_position_embeddings in "
            f"{text_config}; SD 1.5: 77 and 77)"
        )
    largest = max(tokenizer.get_vocab().values())
    vocab_size = configs.text_encoder.get("vocab_size", 49408)
    if largest >= vocab_size:
        raise ValueError(
            f"{folder}: the tokenizer's ids go up to {largest}, beyond the text "
            f"encoder's vocab_size={vocab_size} ({text_config}; SD 1.5: 49408 tokens)"
        )
    return tokenizer


# --------------------------------------------------------------------------------------
# The training noise schedule, and the latents' colours

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


def read_alphas_cumprod(path: Path) -> torch.Tensor:
    """The training noise schedule from a diffusers scheduler config; every field that
    makes it another schedule, or another kind of network, is refused by name."""
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
            f"beta_start={beta_start!r}, beta_end={beta_end!r} "
            "(0 < beta_start < beta_end < 1)"
        )
    if not is_positive_integer(n) or n < 2:
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


def read_preview_factors(folder: Path, channels: int) -> torch.Tensor | None:
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
            f"{path} holds a {tuple(factors.shape)} table; expected one row of "
            f"(R, G, B) per latent channel: ({channels}, 3)"
        )
    return factors


# --------------------------------------------------------------------------------------
# The folder's layout and its JSON files

# the parts of a diffusers text-to-image folder, and the configs each must hold
REQUIRED = {
    "unet": ["config.json"],
    "vae": ["config.json"],
    "text_encoder": ["config.json"],
    "tokenizer": [],
    "scheduler": ["scheduler_config.json"],
}


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
            f"{folder} is not a diffusers-format Stable Diffusion folder; missing: "
            f"{', '.join(missing)}"
        )


def read_json(path: Path) -> dict:
    """A config file's JSON object; anything else is refused by the file's name."""
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise ValueError(
            f"{path} must hold a JSON object {{...}}, but it holds a "
            f"{type(config).__name__}"
        )
    return config
