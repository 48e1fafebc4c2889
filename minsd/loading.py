"""Loading a diffusers-format SD 1.5 folder (or hub repository) into a minsd pipeline.

The folder holds model_index.json and unet/, vae/, text_encoder/, tokenizer/, scheduler/.
The UNet's weights load into minsd's own UNet with strict key and shape checks; the VAE, text
encoder and tokenizer load with diffusers and transformers. Only safetensors files are read:
nothing is ever unpickled.
"""

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from .denoiser import scaled_linear_alphas_cumprod
from .pipeline import StableDiffusion, default_device, default_dtype
from .unet import UNet, UNetConfig

DEFAULT_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_MODEL = Path(__file__).parent / "default_model"  # the tiny shapes model minsd ships (see train.py)
WEIGHTS_ENV = "MINSD_WEIGHTS"
UNET_WEIGHTS = "diffusion_pytorch_model{variant}.safetensors"
TEXT_ENCODER_WEIGHTS = "model{variant}.safetensors"
REQUIRED = {
    "unet": ["config.json"],
    "vae": ["config.json"],
    "text_encoder": ["config.json"],
    "tokenizer": [],
    "scheduler": ["scheduler_config.json"],
}


def load_pipeline(
    weights: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> StableDiffusion:
    """Load SD 1.5 from a local diffusers folder or a hub id.

    weights: a folder, a hub id, or None for $MINSD_WEIGHTS; with neither, minsd's own tiny default
    model (coloured shapes, 32 x 32; see `minsd/train.py`), with a one-line notice.
    device / dtype: default to CUDA in fp16 when present, else the CPU in fp32.
    """
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    weights = weights or os.environ.get(WEIGHTS_ENV)
    if not weights:
        print(
            f"minsd: no SD 1.5 weights configured ({WEIGHTS_ENV} or --weights); using the default model, "
            "a tiny SD trained on coloured shapes",
            file=sys.stderr,
        )
        weights = DEFAULT_MODEL
    folder = resolve_folder(weights, fp16=dtype == torch.float16)
    check_layout(folder)

    has_fp16_files = (folder / "unet" / UNET_WEIGHTS.format(variant=".fp16")).is_file()
    variant = "fp16" if dtype == torch.float16 and has_fp16_files else None
    unet = load_unet(folder / "unet", variant)
    with quiet_progress_bars():
        # low_cpu_mem_usage=False: the default needs `accelerate`, and without it diffusers prints a warning
        vae = AutoencoderKL.from_pretrained(
            folder / "vae", use_safetensors=True, variant=variant, torch_dtype=dtype, low_cpu_mem_usage=False
        )
        text_encoder = CLIPTextModel.from_pretrained(
            folder / "text_encoder", use_safetensors=True, variant=variant, dtype=dtype
        )
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    alphas_cumprod = load_alphas_cumprod(folder / "scheduler" / "scheduler_config.json")
    preview_factors = load_preview_factors(folder)
    name = "minsd default (shapes)" if Path(weights) == DEFAULT_MODEL else str(weights)
    return StableDiffusion(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        alphas_cumprod=alphas_cumprod,
        device=device,
        dtype=dtype,
        name=name,
        preview_factors=preview_factors,
    )


@contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Silence transformers' and diffusers' "Loading weights" bars (in a notebook they land on the page)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled[0]:
            transformers_logging.enable_progress_bar()
        if enabled[1]:
            diffusers_logging.enable_progress_bar()


def resolve_folder(weights: str | os.PathLike, fp16: bool = False) -> Path:
    """A local folder as it is; anything else is taken as a hub id and downloaded (safetensors only)."""
    path = Path(weights).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"weights must be a diffusers-format folder, but {path} is a file")
        return path
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
        return Path(snapshot_download(str(weights), allow_patterns=patterns))
    except Exception as err:  # offline, unknown repository, no access: all mean "no weights here"
        raise FileNotFoundError(
            f"{str(weights)!r} is not a local folder, and it could not be downloaded from the Hugging Face hub "
            f"({type(err).__name__}: {err}).\nOn a machine with internet access run\n"
            f"    hf download {DEFAULT_HUB_ID} --include {' '.join(repr(p) for p in patterns)} --local-dir sd15\n"
            f"then pass the folder (--weights sd15) or set {WEIGHTS_ENV}=sd15."
        ) from err


def check_layout(folder: Path) -> None:
    """Fail with the missing file's name if folder is not a diffusers text-to-image folder."""
    missing = [str(folder / "model_index.json")] if not (folder / "model_index.json").is_file() else []
    for sub, files in REQUIRED.items():
        if not (folder / sub).is_dir():
            missing.append(f"{folder / sub}/")
        else:
            missing += [str(folder / sub / f) for f in files if not (folder / sub / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a diffusers-format Stable Diffusion folder; missing: {', '.join(missing)}"
        )


def unet_config_from_diffusers(config: dict, source: str = "unet/config.json") -> UNetConfig:
    """minsd's UNetConfig from a diffusers UNet2DConditionModel config; refuse what is not SD 1.x-shaped."""
    levels = len(config["block_out_channels"])
    down, up = config.get("down_block_types"), config.get("up_block_types")
    problems = []
    if list(down or []) != ["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"]:
        problems.append(f"down_block_types={down} (SD 1.5: CrossAttnDownBlock2D on every level but the last)")
    if list(up or []) != ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1):
        problems.append(f"up_block_types={up} (SD 1.5: CrossAttnUpBlock2D on every level but the first)")
    if config.get("use_linear_projection", False):
        problems.append("use_linear_projection=True (SD 1.5: False, proj_in/proj_out are 1x1 convolutions)")
    for key in ("addition_embed_type", "class_embed_type"):  # SDXL adds size and text embeddings
        if config.get(key) is not None:
            problems.append(f"{key}={config[key]!r} (SD 1.5: None)")
    if config.get("transformer_layers_per_block", 1) != 1:
        problems.append(f"transformer_layers_per_block={config['transformer_layers_per_block']!r} (SD 1.5: 1)")
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    if not isinstance(heads, int):
        problems.append(f"attention_head_dim={heads!r} differs per level (SD 1.5: one number, 8)")
    if problems:
        raise ValueError(
            f"{source} does not describe an SD 1.5-shaped UNet (is this SD 2.x or SDXL?): " + "; ".join(problems)
        )
    return UNetConfig(
        sample_size=config.get("sample_size", 64),
        in_channels=config.get("in_channels", 4),
        out_channels=config.get("out_channels", 4),
        block_out_channels=tuple(config["block_out_channels"]),
        layers_per_block=config.get("layers_per_block", 2),
        num_heads=heads,
        cross_attention_dim=config.get("cross_attention_dim", 768),
        norm_num_groups=config.get("norm_num_groups", 32),
    )


def diffusers_unet_config(cfg: UNetConfig) -> dict:
    """The diffusers UNet2DConditionModel config of a minsd UNetConfig (the inverse of the above)."""
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


def load_unet(folder: Path, variant: str | None = None) -> UNet:
    """minsd's UNet from a diffusers unet/ folder, with every key and shape checked."""
    config = unet_config_from_diffusers(json.loads((folder / "config.json").read_text()), str(folder / "config.json"))
    path = folder / UNET_WEIGHTS.format(variant=f".{variant}" if variant else "")
    if not path.is_file():
        pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.ckpt")]
        hint = (
            f" ({', '.join(pickled)} exist, but minsd never unpickles; convert them to safetensors)" if pickled else ""
        )
        raise FileNotFoundError(f"no UNet weights: {path} does not exist{hint}")
    with torch.device("meta"):  # build without allocating or initialising: the weights replace everything
        unet = UNet(config)
    check_state_dict_shapes(unet, path)
    unet.load_state_dict(load_file(path), strict=True, assign=True)
    return unet


def check_state_dict_shapes(model: torch.nn.Module, path: Path, show: int = 5) -> None:
    """Compare a safetensors file's keys and shapes with the model's; name the first mismatches."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with safe_open(path, framework="pt") as f:
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    if not (missing or unexpected or wrong):
        return
    lines = [f"{path} does not fit an SD 1.5 UNet of this config ({len(found)} tensors, expected {len(expected)}):"]
    lines += [f"  shape of {k}: file {found[k]}, expected {expected[k]}" for k in wrong[:show]]
    lines += [f"  missing from the file: {k} {expected[k]}" for k in missing[:show]]
    lines += [f"  not in an SD 1.5 UNet: {k} {found[k]}" for k in unexpected[:show]]
    raise ValueError("\n".join(lines))


def load_alphas_cumprod(path: Path) -> torch.Tensor:
    """The training noise schedule from a diffusers scheduler config (SD 1.5: scaled_linear, eps)."""
    config = json.loads(path.read_text())
    if config.get("beta_schedule", "linear") != "scaled_linear":
        raise ValueError(
            f"{path}: beta_schedule={config.get('beta_schedule')!r}; minsd implements SD's 'scaled_linear'"
        )
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise ValueError(
            f"{path}: prediction_type={config['prediction_type']!r} (an SD 2.x-768 v-model?); "
            "minsd's denoiser is for eps-prediction models such as SD 1.5"
        )
    return scaled_linear_alphas_cumprod(
        config.get("beta_start", 0.00085), config.get("beta_end", 0.012), config.get("num_train_timesteps", 1000)
    )


def load_preview_factors(folder: Path) -> torch.Tensor | None:
    """A model's own latent -> RGB factors, if it ships them (vae/preview_factors.json)."""
    path = folder / "vae" / "preview_factors.json"
    return torch.tensor(json.loads(path.read_text())) if path.is_file() else None
