"""A model's configs and tokenizer, checked against what minsd implements, and the parts
against each other, before any weight is read.

minsd implements SD 1.5's UNet, at any size. A field that a config leaves out takes the
default of the class diffusers would build (diffusers' own rule); then every field but
the sizes must be SD 1.5's (its configs ship in minsd/sd15_config/). The VAE and the
text encoder must fit the UNet; the scheduler config gives the training noise schedule.
Each error names the file, the field and its value, and what is allowed.
"""

import inspect
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .checks import is_number, is_positive_integer, is_sequence
from .denoiser import scaled_linear_alphas_cumprod
from .errors import InvalidValue, MissingFile, one_line
from .unet import UNetConfig

if TYPE_CHECKING:
    from transformers import CLIPTextConfig, CLIPTokenizer

SD15_CONFIG = Path(__file__).parent / "sd15_config"  # SD 1.5's configs, no weights
# the files of a diffusers text-to-image folder that minsd reads (and tokenizer/)
REQUIRED = ["model_index.json", "unet/config.json", "vae/config.json"]
REQUIRED += ["text_encoder/config.json", "scheduler/scheduler_config.json"]


@dataclass(frozen=True)
class Configs:
    """A model's checked configs and its tokenizer: all of it but the weights."""

    unet: UNetConfig
    vae: dict
    text_encoder: "CLIPTextConfig"
    tokenizer: "CLIPTokenizer"
    alphas_cumprod: torch.Tensor  # (N,) float64, the training noise schedule
    preview_factors: torch.Tensor | None  # (C, 3) latent -> RGB, if the model has any

    def pipeline_parts(self, **modules: nn.Module) -> dict:
        """StableDiffusion's keyword arguments: the loaded modules (unet, vae,
        text_encoder), and what these configs add."""
        extra = dict(tokenizer=self.tokenizer, alphas_cumprod=self.alphas_cumprod)
        return modules | extra | dict(preview_factors=self.preview_factors)


def read_configs(
    folder: Path, tokenizer: Path | None = None, model_max_length: int | None = None
) -> Configs:
    """Every config of a diffusers-format folder, and its tokenizer (or the one in the
    folder tokenizer, at model_max_length tokens if given), checked, and the parts
    against the UNet: the latents it reads, the width of its text."""
    missing = [f"{folder}/{name}" for name in REQUIRED if not (folder / name).exists()]
    if missing:
        raise MissingFile(
            f"{folder} is not a diffusers-format Stable Diffusion folder; missing: "
            + ", ".join(missing)
        )
    read_json(folder / "model_index.json")
    unet = read_unet_config(folder / "unet" / "config.json")
    vae = read_vae_config(folder / "vae" / "config.json", unet)
    text_path = folder / "text_encoder" / "config.json"
    text = read_text_encoder_config(text_path, unet)
    tokenizer = tokenizer or folder / "tokenizer"
    tokenizer = load_tokenizer(tokenizer, text, text_path, model_max_length)
    schedule = read_alphas_cumprod(folder / "scheduler" / "scheduler_config.json")
    factors = read_preview_factors(folder / "vae" / "preview_factors.json", unet)
    return Configs(unet, vae, text, tokenizer, schedule, factors)


def read_json(path: Path) -> dict:
    """A config file's JSON object; anything else is refused by the file's name."""
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidValue(f"{path} is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        kind = type(config).__name__
        raise InvalidValue(f"{path} must hold a JSON object {{...}}, not a {kind}")
    return config


def with_defaults(cls: type, config: dict) -> dict:
    """config, each field it leaves out at its default in cls.__init__ (as diffusers
    fills them), tuples as lists (as config.json writes them)."""
    parameters = inspect.signature(cls.__init__).parameters.items()
    full = {k: p.default for k, p in parameters if k not in ("self", "kwargs")} | config
    return {k: list(v) if isinstance(v, tuple) else v for k, v in full.items()}


def sd15_differences(config: dict, full: dict, sd15: dict, names: list) -> list[str]:
    """Each field of names whose value in full (config's, else diffusers' default) is
    not SD 1.5's."""
    problems = []
    for k in names:
        if full[k] != sd15[k]:
            default = "" if k in config else ", diffusers' default"
            problems.append(f"{k}={full[k]!r} (SD 1.5: {sd15[k]!r}{default})")
    return problems


# --------------------------------------------------------------------------------------
# The UNet

# The sizes (minsd's UNetConfig) and their names in diffusers' config: the number of
# heads is attention_head_dim, a historical misnomer. Every other field must be SD
# 1.5's (but dropout, which acts only in training).
SIZES = {f.name: f.name for f in fields(UNetConfig)}
SIZES["num_heads"] = "attention_head_dim"


def read_unet_config(path: Path) -> UNetConfig:
    """minsd's UNetConfig from a diffusers unet/config.json (diffusers writes
    _class_name into each: a file without one is refused as _class_name=None)."""
    return unet_config_from_diffusers({"_class_name": None} | read_json(path), path)


def unet_config_from_diffusers(
    config: dict, source: str | Path = "the UNet config"
) -> UNetConfig:
    """minsd's UNetConfig from a diffusers UNet2DConditionModel config: a config.json's
    object, or a model's `.config` (which names no class). Every field minsd does not
    implement is refused by name."""
    from diffusers import UNet2DConditionModel

    config = {"_class_name": "UNet2DConditionModel"} | dict(config)
    full = with_defaults(UNet2DConditionModel, config)
    channels = full["block_out_channels"]
    if not (
        is_sequence(channels) and channels and all(map(is_positive_integer, channels))
    ):
        raise InvalidValue(
            f"{source}: block_out_channels={channels!r} must be a list or tuple of "
            "positive integers, one per level"
        )
    sizes = {ours: full[theirs] for ours, theirs in SIZES.items()}
    cfg = UNetConfig(**sizes | {"block_out_channels": tuple(channels)})
    # SD 1.5's UNet at these sizes: its config, with the block types of these levels
    sd15 = read_json(SD15_CONFIG / "unet" / "config.json") | diffusers_unet_config(cfg)
    sd15 = with_defaults(UNet2DConditionModel, sd15)
    problems = sd15_differences(config, full, sd15, [k for k in sd15 if k != "dropout"])
    # diffusers' bookkeeping (_diffusers_version, ...) is not a field
    unknown = [k for k in config if k not in sd15 and not k.startswith("_")]
    problems += [f"{k}={config[k]!r} (a field minsd does not know)" for k in unknown]
    counts = [k for k in SIZES.values() if k != "block_out_channels"]
    problems += [
        f"{k}={full[k]!r} (must be one positive integer)"
        for k in counts
        if not is_positive_integer(full[k])
    ]
    if not problems and cfg.out_channels != cfg.in_channels:
        problems.append(
            f"out_channels={cfg.out_channels} differs from in_channels="
            f"{cfg.in_channels} (SD 1.5: 4 and 4; an inpainting model reads 9 "
            "channels, minsd's denoiser predicts noise of the input's shape)"
        )
    problems += [
        f"{k}={full[k]} does not divide every block_out_channels {channels}"
        for k in ("norm_num_groups", "attention_head_dim")
        if is_positive_integer(full[k]) and any(c % full[k] for c in channels)
    ]
    if problems:
        raise InvalidValue(
            f"{source} does not describe an SD 1.5-shaped UNet (the only one minsd "
            "implements): " + "; ".join(problems)
        )
    return cfg


def diffusers_unet_config(cfg: UNetConfig) -> dict:
    """The diffusers UNet2DConditionModel config of a minsd UNetConfig (the inverse of
    unet_config_from_diffusers)."""
    config = {"_class_name": "UNet2DConditionModel"}
    config |= {SIZES[k]: v for k, v in asdict(cfg).items()}
    cross = len(cfg.block_out_channels) - 1  # levels with cross-attention
    config["block_out_channels"] = list(cfg.block_out_channels)
    config["down_block_types"] = ["CrossAttnDownBlock2D"] * cross + ["DownBlock2D"]
    config["up_block_types"] = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * cross
    return config


# --------------------------------------------------------------------------------------
# The VAE, the text encoder and its tokenizer: do they fit the UNet?

# an AutoencoderKL of RGB pixels, whose latents are scaled by scaling_factor only (later
# models shift and normalise them)
VAE = ["_class_name", "in_channels", "out_channels"]
VAE += ["shift_factor", "latents_mean", "latents_std"]


def read_vae_config(path: Path, unet: UNetConfig) -> dict:
    """An AutoencoderKL whose latents the UNet reads, as SD 1.5's (diffusers builds the
    rest)."""
    from diffusers import AutoencoderKL

    config = {"_class_name": None} | read_json(path)
    vae = with_defaults(AutoencoderKL, config)
    sd15 = with_defaults(AutoencoderKL, read_json(SD15_CONFIG / "vae" / "config.json"))
    problems = sd15_differences(config, vae, sd15, VAE)
    if vae["latent_channels"] != unet.in_channels:
        problems.append(
            f"latent_channels={vae['latent_channels']!r}, but the UNet reads "
            f"in_channels={unet.in_channels}"
        )
    factor = vae["scaling_factor"]
    if not is_number(factor) or factor <= 0:
        problems.append(
            f"scaling_factor={factor!r} (a positive number; SD 1.5: 0.18215)"
        )
    if problems:
        raise InvalidValue(
            f"{path}: " + "; ".join(problems) + ". minsd decodes SD 1.5's latents: of "
            "RGB pixels, scaled by scaling_factor only"
        )
    return config


def read_text_encoder_config(path: Path, unet: UNetConfig) -> "CLIPTextConfig":
    """A CLIP text model whose output is as wide as the text the UNet's cross-attention
    reads."""
    from transformers import CLIPTextConfig

    config = read_json(path)
    text = CLIPTextConfig.from_dict(config)  # transformers' defaults fill the rest
    problems = []
    if config.get("model_type") != "clip_text_model":
        problems.append(
            f"model_type={config.get('model_type')!r} (SD 1.5: 'clip_text_model')"
        )
    if text.hidden_size != unet.cross_attention_dim:
        problems.append(
            f"hidden_size={text.hidden_size}, but the UNet's cross-attention reads "
            f"cross_attention_dim={unet.cross_attention_dim} (SD 1.5: 768 and 768)"
        )
    if problems:
        raise InvalidValue(f"{path}: " + "; ".join(problems))
    return text


def load_tokenizer(
    folder: Path,
    text: "CLIPTextConfig",
    text_path: Path,
    model_max_length: int | None = None,
) -> "CLIPTokenizer":
    """The CLIP tokenizer in folder, checked against the text encoder it feeds: no
    more tokens than it has positions, no id beyond its vocabulary."""
    from transformers import CLIPTokenizer

    files = [["tokenizer.json"], ["vocab.json", "merges.txt"]]
    if not any(all((folder / name).is_file() for name in names) for names in files):
        raise MissingFile(
            f"{folder} holds no CLIP tokenizer: it needs tokenizer.json, or vocab.json "
            "and merges.txt"
        )
    for path in sorted(folder.glob("*.json")):
        read_json(path)
    asked = {} if model_max_length is None else {"model_max_length": model_max_length}
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder, **asked)
    # transformers raises many types; each means "these files make no tokenizer"
    except Exception as err:
        kind = type(err).__name__
        raise InvalidValue(
            f"{folder}: no CLIP tokenizer could be loaded ({kind}: {one_line(err)})"
        ) from err
    if tokenizer.model_max_length > text.max_position_embeddings:
        raise InvalidValue(
            f"{folder}: model_max_length={tokenizer.model_max_length}, but the text "
            f"encoder has {text.max_position_embeddings} positions "
            f"(max_position_embeddings in {text_path}; SD 1.5: 77 and 77)"
        )
    largest = max(tokenizer.get_vocab().values())
    if largest >= text.vocab_size:
        raise InvalidValue(
            f"{folder}: the tokenizer's ids go up to {largest}, beyond the text "
            f"encoder's vocab_size={text.vocab_size} ({text_path}; SD 1.5: 49408)"
        )
    return tokenizer


# --------------------------------------------------------------------------------------
# The training noise schedule, and the latents' colours

# The scheduler config's fields that change the training noise schedule or what the
# network predicts. Its sampling fields (timestep_spacing, steps_offset, ...) are not
# read: minsd has its own samplers and spacings.
SCHEDULE = ["beta_schedule", "trained_betas", "rescale_betas_zero_snr"]
SCHEDULE += ["prediction_type", "timestep_type"]


def read_alphas_cumprod(path: Path) -> torch.Tensor:
    """The training noise schedule from a diffusers scheduler config; every field that
    makes it another schedule, or another kind of network, is refused by name."""
    from diffusers import EulerDiscreteScheduler

    config = read_json(path)
    full = with_defaults(EulerDiscreteScheduler, config)
    sd15 = read_json(SD15_CONFIG / "scheduler" / "scheduler_config.json")
    sd15 = with_defaults(EulerDiscreteScheduler, sd15)
    problems = sd15_differences(config, full, sd15, SCHEDULE)
    start, end, n = full["beta_start"], full["beta_end"], full["num_train_timesteps"]
    if not (is_number(start) and is_number(end) and 0 < start < end < 1):
        problems.append(
            f"beta_start={start!r}, beta_end={end!r} (0 < beta_start < beta_end < 1)"
        )
    if not is_positive_integer(n) or n < 2:
        problems.append(f"num_train_timesteps={n!r} (at least 2; SD 1.5: 1000)")
    if problems:
        raise InvalidValue(
            f"{path}: " + "; ".join(problems) + ". minsd implements SD 1.5's "
            "schedule: scaled_linear betas and an eps-prediction network"
        )
    return scaled_linear_alphas_cumprod(start, end, n)


def read_preview_factors(path: Path, unet: UNetConfig) -> torch.Tensor | None:
    """A model's own latent -> RGB factors (vae/preview_factors.json), if it ships
    them: one row of (R, G, B) per latent channel."""
    if not path.is_file():
        return None
    try:
        factors = torch.tensor(json.loads(path.read_text()))
    except (ValueError, TypeError) as err:  # not JSON, or not a table of numbers
        raise InvalidValue(f"{path} is not a JSON table of numbers ({err})") from err
    if factors.shape != (unet.in_channels, 3):
        raise InvalidValue(
            f"{path} holds a {tuple(factors.shape)} table; expected one row of "
            f"(R, G, B) per latent channel: ({unet.in_channels}, 3)"
        )
    return factors
