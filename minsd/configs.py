"""A model's configs and tokenizer, checked against SD 1.5's before any weight is read.

minsd implements SD 1.5's UNet, at any size. A field a config leaves out takes its
default in the class diffusers would build; every field but the sizes must then be
SD 1.5's (minsd/sd15_config/). The VAE and the text encoder must fit the UNet, the
tokenizer the text encoder. Each error names the file, the field, its value and what
is allowed.
"""

import inspect
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .checks import is_number, is_positive_integer, is_sequence
from .denoiser import scaled_linear_alphas_cumprod
from .errors import InvalidValue, MissingFile, one_line
from .unet import UNetConfig

if TYPE_CHECKING:
    from transformers import CLIPTextConfig, CLIPTokenizer

SD15_CONFIG = Path(__file__).parent / "sd15_config"  # SD 1.5's configs, no weights
# SD 1.5's tokenizer is CLIP's, as minsd's default model ships it, at 77 tokens
SD15_TOKENIZER = Path(__file__).parent / "default_model" / "tokenizer"
# the files of a diffusers text-to-image folder that minsd reads (and tokenizer/)
REQUIRED = ["model_index.json", "unet/config.json", "vae/config.json"]
REQUIRED += ["text_encoder/config.json", "scheduler/scheduler_config.json"]


def read_configs(folder: Path) -> dict:
    """StableDiffusion's arguments from a diffusers folder, but the weights: the
    configs to build each part from, the tokenizer, the training noise schedule and
    the latents' preview colours."""
    missing = [str(folder / name) for name in REQUIRED if not (folder / name).exists()]
    if missing:
        raise MissingFile(
            f"{folder} is not a diffusers-format Stable Diffusion folder; missing: "
            + ", ".join(missing)
        )
    read_json(folder / "model_index.json")
    unet = read_unet_config(folder / "unet/config.json")
    vae = read_vae_config(folder / "vae/config.json", unet)
    text, tokenizer = read_text_encoder(folder, unet)
    schedule = read_alphas_cumprod(folder / "scheduler/scheduler_config.json")
    factors = read_preview_factors(folder / "vae/preview_factors.json", unet)
    parts = dict(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer)
    return parts | dict(alphas_cumprod=schedule, preview_factors=factors)


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


def sd15_differences(cls: type, config: dict, sd15: dict, names: list) -> list[str]:
    """Each field of names whose value in config is not SD 1.5's (in sd15); a field
    left out takes its default in cls (or None)."""
    full, sd15 = with_defaults(cls, config), with_defaults(cls, sd15)
    return [
        f"{k}={full.get(k)!r} ({'' if k in config else 'left out, so the default; '}"
        f"SD 1.5: {sd15.get(k)!r})"
        for k in names
        if full.get(k) != sd15.get(k)
    ]


def refuse(what: object, problems: list[str], why: str = "") -> None:
    """One error for all the problems of what, if there are any."""
    if problems:
        raise InvalidValue(f"{what}: " + "; ".join(problems) + why)


# -- the UNet --------------------------------------------------------------------------

# The sizes (minsd's UNetConfig) and their names in diffusers' config: the number of
# heads is attention_head_dim, a historical misnomer.
SIZES = {f.name: f.name for f in fields(UNetConfig)}
SIZES["num_heads"] = "attention_head_dim"


def read_unet_config(path: Path) -> UNetConfig:
    """minsd's UNetConfig from a diffusers unet/config.json, which names its class."""
    return unet_config_from_diffusers({"_class_name": None} | read_json(path), path)


def unet_config_from_diffusers(
    config: dict, source: str | Path = "the UNet config"
) -> UNetConfig:
    """minsd's UNetConfig from a diffusers UNet2DConditionModel config (a config.json's
    object, or a model's `.config`): its sizes, every other field SD 1.5's (but
    dropout, which acts only in training)."""
    from diffusers import UNet2DConditionModel

    config = {"_class_name": "UNet2DConditionModel"} | dict(config)
    full = with_defaults(UNet2DConditionModel, config)
    what = f"{source} does not describe an SD 1.5-shaped UNet (the only one minsd "
    what += "implements)"
    channels = full["block_out_channels"]
    if not (
        is_sequence(channels) and channels and all(map(is_positive_integer, channels))
    ):
        bad = f"block_out_channels={channels!r} (must be a list of positive integers)"
        refuse(what, [bad])
    sizes = {ours: full[theirs] for ours, theirs in SIZES.items()}
    cfg = UNetConfig(**sizes | {"block_out_channels": tuple(channels)})
    # SD 1.5's UNet at these sizes: its config, with the block types of these levels
    sd15 = read_json(SD15_CONFIG / "unet/config.json") | diffusers_unet_config(cfg)
    known = with_defaults(UNet2DConditionModel, sd15)
    compared = [k for k in known if k != "dropout"]
    problems = sd15_differences(UNet2DConditionModel, config, sd15, compared)
    problems += [
        f"{k}={v!r} (a field minsd does not know)"
        for k, v in config.items()
        if k not in known and not k.startswith("_")  # but diffusers' bookkeeping
    ]
    problems += [
        f"{k}={full[k]!r} (must be one positive integer)"
        for k in SIZES.values()
        if k != "block_out_channels" and not is_positive_integer(full[k])
    ]
    if not problems and cfg.out_channels != cfg.in_channels:
        problems.append(
            f"out_channels={cfg.out_channels} differs from in_channels="
            f"{cfg.in_channels} (SD 1.5: 4 and 4; minsd's denoiser predicts noise of "
            "the input's shape; an inpainting model reads 9 channels)"
        )
    problems += [
        f"{k}={full[k]} does not divide every block_out_channels {channels}"
        for k in ("norm_num_groups", "attention_head_dim")
        if is_positive_integer(full[k]) and any(c % full[k] for c in channels)
    ]
    refuse(what, problems)
    return cfg


def diffusers_unet_config(cfg: UNetConfig) -> dict:
    """The diffusers UNet2DConditionModel config of a minsd UNetConfig."""
    config = {"_class_name": "UNet2DConditionModel"}
    config |= {SIZES[k]: v for k, v in asdict(cfg).items()}
    cross = len(cfg.block_out_channels) - 1  # levels with cross-attention
    config["block_out_channels"] = list(cfg.block_out_channels)
    config["down_block_types"] = ["CrossAttnDownBlock2D"] * cross + ["DownBlock2D"]
    config["up_block_types"] = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * cross
    return config


# -- the VAE, the text encoder and its tokenizer: do they fit the UNet? ----------------

# an AutoencoderKL of RGB pixels, whose latents are scaled by scaling_factor only (later
# models shift and normalise them)
VAE = ["_class_name", "in_channels", "out_channels"]
VAE += ["shift_factor", "latents_mean", "latents_std"]


def read_vae_config(path: Path, unet: UNetConfig) -> dict:
    """An AutoencoderKL whose latents the UNet reads, as SD 1.5's."""
    from diffusers import AutoencoderKL

    config = {"_class_name": None} | read_json(path)
    sd15 = read_json(SD15_CONFIG / "vae/config.json")
    problems = sd15_differences(AutoencoderKL, config, sd15, VAE)
    vae = with_defaults(AutoencoderKL, config)
    if vae["latent_channels"] != unet.in_channels:
        problems.append(
            f"latent_channels={vae['latent_channels']!r}, but the UNet reads "
            f"in_channels={unet.in_channels}"
        )
    factor = vae["scaling_factor"]
    if not is_number(factor) or factor <= 0:
        problems.append(f"scaling_factor={factor!r} (positive; SD 1.5: 0.18215)")
    why = ". minsd decodes SD 1.5's latents: RGB pixels, scaled by scaling_factor only"
    refuse(path, problems, why)
    return config


def read_text_encoder(
    folder: Path, unet: UNetConfig
) -> tuple["CLIPTextConfig", "CLIPTokenizer"]:
    """The CLIP text model's config and its tokenizer: its output as wide as the text
    the UNet's cross-attention reads, no more tokens than it has positions, no id
    beyond its vocabulary."""
    from transformers import CLIPTextConfig, CLIPTokenizer

    path = folder / "text_encoder/config.json"
    config = read_json(path)
    text = CLIPTextConfig.from_dict(config)  # transformers' defaults fill the rest
    tokenizer, asked = folder / "tokenizer", {}
    if folder == SD15_CONFIG:
        tokenizer, asked = SD15_TOKENIZER, {"model_max_length": 77}
    if not any(
        (tokenizer / name).is_file() for name in ("tokenizer.json", "vocab.json")
    ):
        raise MissingFile(
            f"{tokenizer} holds no CLIP tokenizer: it needs tokenizer.json, or "
            "vocab.json and merges.txt"
        )
    for json_file in sorted(tokenizer.glob("*.json")):
        read_json(json_file)
    try:
        tokens = CLIPTokenizer.from_pretrained(tokenizer, **asked)
    # transformers raises many types; each means "these files make no tokenizer"
    except Exception as err:
        raise InvalidValue(
            f"{tokenizer}: no CLIP tokenizer could be loaded ({type(err).__name__}: "
            f"{one_line(err)})"
        ) from err
    sd15 = read_json(SD15_CONFIG / "text_encoder/config.json")
    problems = sd15_differences(CLIPTextConfig, config, sd15, ["model_type"])
    if text.hidden_size != unet.cross_attention_dim:
        problems.append(
            f"hidden_size={text.hidden_size}, but the UNet's cross-attention reads "
            f"cross_attention_dim={unet.cross_attention_dim} (SD 1.5: 768 and 768)"
        )
    n, positions = tokens.model_max_length, text.max_position_embeddings
    if n > positions:
        problems.append(
            f"max_position_embeddings={positions}, but the tokenizer ({tokenizer}) "
            f"reads model_max_length={n} tokens (SD 1.5: 77 and 77)"
        )
    largest = max(tokens.get_vocab().values())
    if largest >= text.vocab_size:
        problems.append(
            f"vocab_size={text.vocab_size}, but the tokenizer's ids go up to {largest} "
            "(SD 1.5: 49408 and 49407)"
        )
    refuse(path, problems)
    return text, tokens


# -- the training noise schedule, and the latents' colours -----------------------------

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
    sd15 = read_json(SD15_CONFIG / "scheduler/scheduler_config.json")
    problems = sd15_differences(EulerDiscreteScheduler, config, sd15, SCHEDULE)
    full = with_defaults(EulerDiscreteScheduler, config)
    start, end, n = full["beta_start"], full["beta_end"], full["num_train_timesteps"]
    if not (is_number(start) and is_number(end) and 0 < start < end < 1):
        problems.append(
            f"beta_start={start!r}, beta_end={end!r} (0 < beta_start < beta_end < 1)"
        )
    if not is_positive_integer(n) or n < 2:
        problems.append(f"num_train_timesteps={n!r} (at least 2; SD 1.5: 1000)")
    why = ". minsd implements SD 1.5's: scaled_linear betas, an eps-prediction network"
    refuse(path, problems, why)
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
