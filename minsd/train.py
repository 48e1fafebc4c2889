"""Train minsd's default model: a tiny Stable Diffusion on procedural shapes
(`minsd/dataset.py`).

    python -m minsd.train --out minsd/default_model --unet-stop 1332
    python -m minsd.train --out minsd/default_model --resume minsd/default_model \
        --unet-steps 1400 --unet-batch 1024 --lr 5e-4

(the two runs that made the shipped model, on one H200 in 7.4 minutes; see its
training.json).

Same family and code paths as SD 1.5: an AutoencoderKL with 4 latent channels
(diffusers), a CLIPTextModel with CLIP's own tokenizer (transformers), and minsd's
UNet, trained to predict eps on SD's scaled_linear 1000-step schedule with 10% of the
captions dropped, so that minsd's unchanged denoiser, samplers and pipeline run it.
32 x 32 images and a factor-4 VAE give 8 x 8 x 4 latents. Three stages: the VAE, then
the UNet and the text encoder together (in the frozen VAE's latent space), then the
diffusers-format folder. Runs on CUDA when present.
"""

import argparse
import gzip
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checks import check_train_config, resolve_device
from .configs import SD15_CONFIG, diffusers_unet_config, read_json
from .dataset import make_dataset
from .denoiser import scaled_linear_alphas_cumprod
from .errors import InvalidValue
from .loading import DEFAULT_MODEL, load_unet
from .tokenizer import build_clip_tokenizer, token_ids
from .unet import UNet, UNetConfig

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

UNET_CONFIG = UNetConfig(
    sample_size=8,  # 8 x 8 latents = 32 x 32 pixels
    block_out_channels=(32, 64, 64, 64),  # SD 1.5's four levels, 10x narrower
    layers_per_block=2,
    num_heads=4,
    cross_attention_dim=32,  # the text encoder's width
    norm_num_groups=8,
)
EMA_DECAY = 0.999  # the saved weights average about the last 1 / (1 - 0.999) steps


@dataclass
class TrainConfig:
    """The settings of a training run, one per command-line flag (`train_images` is
    --train-images). The folder's training.json records them as "args"."""

    out: Path = Path("minsd/default_model")  # the diffusers-format folder to write
    device: str | None = None  # None: CUDA when present, else the CPU
    seed: int = 0  # the data, the initialisation and every batch follow from it
    train_images: int = 20_000  # procedural images (minsd.dataset) to train on
    vae_steps: int = 4000  # optimiser steps of the VAE stage
    vae_batch: int = 128  # images per VAE step
    unet_steps: int = 6000  # UNet steps that the learning-rate schedule spans
    unet_stop: int | None = None  # stop the UNet stage after this many (None: all)
    unet_batch: int = 256  # noisy latents per UNet step
    lr: float = 1e-3  # peak learning rate of both stages (see cosine_lr)
    max_minutes: float | None = None  # stop each stage early after this long
    resume: Path | None = None  # a folder this command wrote: keep its VAE, go on
    merges: Path | None = None  # CLIP's BPE merges, .txt.gz (None: the shipped ones)
    model_max_length: int = 16  # text tokens; the captions have ~9 (SD 1.5: 77)

    def __post_init__(self) -> None:
        check_train_config(self)  # each setting in its range, or a refusal that says so


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The command line (sys.argv[1:] if argv is None) -> a TrainConfig: a flag per
    field, of the field's type (X for X | None) and default."""
    about = "Each flag sets the field of its name of TrainConfig (minsd/train.py)."
    parser = argparse.ArgumentParser("python -m minsd.train", description=about)
    for field in fields(TrainConfig):
        kind = [t for t in get_args(field.type) or [field.type] if t is not type(None)]
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(
            flag, type=kind[0], default=field.default, help="default: %(default)s"
        )
    try:
        return TrainConfig(**vars(parser.parse_args(argv)))
    except ValueError as err:  # a setting out of range: say so as argparse does
        parser.error(str(err))


# --------------------------------------------------------------------------------------
# Components


def clip_tokenizer(merges: Path | None, model_max_length: int) -> "CLIPTokenizer":
    """OpenAI CLIP's tokenizer: the one the default model ships, or one built from a
    merges file (CLIP's bpe_simple_vocab_16e6.txt.gz, or any in its format)."""
    from transformers import CLIPTokenizer

    if merges is None:
        folder = DEFAULT_MODEL / "tokenizer"
        return CLIPTokenizer.from_pretrained(folder, model_max_length=model_max_length)
    lines = gzip.decompress(merges.read_bytes()).decode("utf-8").split("\n")
    # a version line, then one merge per line: 48,894 of them in CLIP's file (the
    # vocabulary: 512 byte symbols, the merges, 2 special tokens = 49,408)
    pairs = [tuple(line.split()) for line in lines[1 : 49408 - 512 - 2 + 1] if line]
    return build_clip_tokenizer(pairs, model_max_length)


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,  # 3 levels: factor 4
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=2,  # few: GroupNorm must keep the colours of flat images
        sample_size=32,
    )


def make_text_encoder(vocab_size: int, max_length: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=UNET_CONFIG.cross_attention_dim,
        intermediate_size=4 * UNET_CONFIG.cross_attention_dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        hidden_act="quick_gelu",
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModel(config)


def to_unit_range(images: np.ndarray, device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1]."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1).to(device)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of images in [-1, 1] (peak-to-peak 2), in dB."""
    return (10 * torch.log10(4 / F.mse_loss(a.clamp(-1, 1), b))).item()


class Deadline:
    def __init__(self, minutes: float | None) -> None:
        self.end = None if minutes is None else time.monotonic() + 60 * minutes

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() > self.end


def cosine_lr(step: int, total: int, lr: float) -> float:
    warmup = min(200, total // 10)
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# --------------------------------------------------------------------------------------
# Stage 1: the VAE


def train_vae(vae, images: torch.Tensor, config: TrainConfig) -> int:
    """L1 reconstruction + a tiny KL term (as SD's VAE, without the GAN and perceptual
    losses). Returns the steps taken."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    deadline = Deadline(config.max_minutes)
    bar = tqdm(range(config.vae_steps), desc="VAE", unit="step")
    for step in bar:
        index = torch.randint(len(images), (config.vae_batch,), generator=generator)
        batch = images[index]  # (B, 3, H, W) in [-1, 1]
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        loss = F.l1_loss(reconstruction, batch) + 1e-6 * posterior.kl().mean()
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, config.vae_steps, config.lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if deadline.passed():
            return step + 1
    return config.vae_steps


@torch.no_grad()
def encode(vae, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Images -> the posterior means (N, 4, h, w), unscaled."""
    return torch.cat([vae.encode(x).latent_dist.mode() for x in images.split(batch)])


@torch.no_grad()
def reconstruction_psnr(vae, images: torch.Tensor) -> float:
    latents = encode(vae, images).split(512)
    return psnr(torch.cat([vae.decode(z).sample for z in latents]), images)


# --------------------------------------------------------------------------------------
# Stage 2: the UNet and the text encoder


def train_unet(
    unet,
    text_encoder,
    latents: torch.Tensor,
    caption_ids: torch.Tensor,
    empty_ids: torch.Tensor,
    config: TrainConfig,
    callback=None,
    progress: bool = True,
) -> tuple[int, list[torch.Tensor]]:
    """eps-prediction on SD's schedule: x_t = sqrt(abar_t) y + sqrt(1 - abar_t) eps
    for a clean latent y, loss |eps - F(x_t, t, c)|^2.

    latents: (N, 4, h, w) scaled training latents y; caption_ids: (N, T) their
    captions' tokens; empty_ids: (1, T) the empty prompt's. Min-SNR-5 weighting (Hang
    et al. 2023) evens out the timesteps; 10% of the captions are replaced by the empty
    prompt, so that the model also learns the unconditional D for guidance. Returns the
    steps taken and an exponential moving average of the weights (EMA_DECAY).
    callback, if given, is called after every step with {"step", "loss"} (the step just
    taken, from 0).
    """
    device = latents.device
    alphas_cumprod = scaled_linear_alphas_cumprod().float().to(device)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(config.seed + 1)
    deadline = Deadline(config.max_minutes)
    bar = tqdm(
        range(config.unet_stop or config.unet_steps),
        desc="UNet + text encoder",
        unit="step",
        disable=not progress,
    )
    batch = config.unet_batch
    for step in bar:
        index = torch.randint(len(latents), (batch,), generator=generator)
        y, ids = latents[index], caption_ids[index]  # (B, 4, h, w), (B, T)
        drop = torch.rand(batch, generator=generator) < 0.1
        ids = torch.where(drop[:, None].to(device), empty_ids, ids)  # (B, T)
        t = torch.randint(0, 1000, (batch,), generator=generator).to(device)
        eps = torch.randn(y.shape, generator=generator).to(device)
        abar = alphas_cumprod[t][:, None, None, None]  # (B, 1, 1, 1)
        x_t = abar.sqrt() * y + (1 - abar).sqrt() * eps
        context = text_encoder(ids).last_hidden_state  # (B, T, D)
        prediction = unet(x_t, t.float(), context)  # F(x_t, t, c), (B, 4, h, w)
        snr = (abar / (1 - abar)).flatten()  # (B,)
        weight = snr.clamp(max=5.0) / snr
        loss = (weight * (prediction - eps).pow(2).mean(dim=(1, 2, 3))).mean()
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, config.unet_steps, config.lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            for average, p in zip(ema, params):
                # average += (1 - decay) (p - average)
                average.lerp_(p, 1 - EMA_DECAY)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if callback is not None:
            callback({"step": step, "loss": loss.item()})
        if deadline.passed():
            return step + 1, ema
    return len(bar), ema


# --------------------------------------------------------------------------------------
# Stage 3: the folder


def loss_curve(losses: list[float], window: int = 10) -> list[list[float]]:
    """[[last step of the window, mean loss over the window], ...]: the training curve,
    small enough to keep."""
    chunks = [losses[i : i + window] for i in range(0, len(losses), window)]
    ends = [min(i + window, len(losses)) for i in range(0, len(losses), window)]
    return [[end, round(sum(c) / len(c), 5)] for end, c in zip(ends, chunks)]


def preview_factors(latents: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Least-squares (C, 3) map from scaled latents to the mean colour of each latent
    pixel's patch."""
    factor = images.shape[-1] // latents.shape[-1]
    colours = F.avg_pool2d(images, factor)  # (N, 3, h, w) in [-1, 1]
    a = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])  # (N h w, C)
    b = colours.permute(0, 2, 3, 1).reshape(-1, 3)  # (N h w, 3)
    # (C, 3)
    return torch.linalg.lstsq(a.cpu().double(), b.cpu().double()).solution.float()


def save_folder(
    out: Path, unet, vae, text_encoder, tokenizer, factors: torch.Tensor, record: dict
) -> None:
    from diffusers import EulerDiscreteScheduler
    from safetensors.torch import save_file

    def write_json(path: Path, value: object, indent: int | None = 2) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value, indent=indent) + "\n")

    write_json(out / "unet" / "config.json", diffusers_unet_config(unet.config))
    state = {k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}
    save_file(state, out / "unet" / "diffusion_pytorch_model.safetensors")
    vae.save_pretrained(out / "vae", safe_serialization=True)
    write_json(out / "vae" / "preview_factors.json", factors.tolist(), indent=None)
    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(out / "tokenizer")
    # SD 1.5's training schedule, sampled by Euler with linspace spacing
    sd15 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    scheduler = EulerDiscreteScheduler(
        **sd15, steps_offset=1, timestep_spacing="linspace"
    )
    scheduler.save_pretrained(out / "scheduler")
    # SD 1.5's parts, with that scheduler
    model_index = read_json(SD15_CONFIG / "model_index.json")
    write_json(
        out / "model_index.json",
        model_index | {"scheduler": ["diffusers", "EulerDiscreteScheduler"]},
    )
    write_json(out / "training.json", record)


def main(argv: list[str] | None = None) -> None:
    """`python -m minsd.train`: train the three stages and write the folder."""
    config = parse_args(argv)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    start = time.time()

    images_np, scenes = make_dataset(config.train_images, seed=config.seed)
    held_out_np, _ = make_dataset(512, seed=config.seed + 10_000)
    images = to_unit_range(images_np, device)  # (N, 3, H, W) in [-1, 1]
    held_out = to_unit_range(held_out_np, device)
    if config.resume is None:
        tokenizer = clip_tokenizer(config.merges, config.model_max_length)
        vae = make_vae().to(device)
        vae_steps = train_vae(vae.train(), images, config)
    else:
        from diffusers import AutoencoderKL
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(config.resume / "tokenizer")
        if tokenizer.model_max_length != config.model_max_length:
            raise InvalidValue(
                f"--model-max-length {config.model_max_length} differs from the "
                f"{tokenizer.model_max_length} tokens of {config.resume / 'tokenizer'}"
            )
        vae = AutoencoderKL.from_pretrained(config.resume / "vae").to(device)
        vae_steps = 0
    vae.eval().requires_grad_(False)
    vae_psnr = reconstruction_psnr(vae, held_out)
    print(f"VAE: {vae_steps} steps, held-out PSNR {vae_psnr:.2f} dB", flush=True)
    latents = encode(vae, images)
    if config.resume is None:
        # unit variance, like SD's 0.18215
        vae.register_to_config(scaling_factor=float(1 / latents.std()))
    latents = latents * vae.config.scaling_factor  # (N, 4, h, w): the y of training

    captions = token_ids(tokenizer, [s.caption for s in scenes], device)  # (N, T)
    empty = token_ids(tokenizer, [""], device)  # (1, T)
    if config.resume is None:
        unet = UNet(UNET_CONFIG).to(device).train()
        text_encoder = make_text_encoder(len(tokenizer), config.model_max_length)
        text_encoder = text_encoder.to(device).train()
    else:
        from transformers import CLIPTextModel

        unet = load_unet(config.resume / "unet").to(device).train()
        text_encoder = CLIPTextModel.from_pretrained(config.resume / "text_encoder")
        text_encoder = text_encoder.to(device).train()
    steps = []  # each UNet step's {"step", "loss"}, for the record's loss curve
    data = latents, captions, empty
    unet_steps, ema = train_unet(unet, text_encoder, *data, config, steps.append)
    with torch.no_grad():
        for p, average in zip([*unet.parameters(), *text_encoder.parameters()], ema):
            p.copy_(average)

    arguments = sys.argv[1:] if argv is None else argv
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    # every setting, as the command line gave it, with the device it resolved to
    settings = {k: str(v) for k, v in asdict(config).items()} | {"device": str(device)}
    record = {
        "command": " ".join(["python -m minsd.train", *arguments]),
        "args": settings,
        "device": gpu,
        "torch": torch.__version__,
        "vae_steps": vae_steps,
        "unet_steps": unet_steps,
        "vae_held_out_psnr_db": round(vae_psnr, 2),
        "minutes": round((time.time() - start) / 60, 1),
        "unet_loss_curve": loss_curve([step["loss"] for step in steps]),
    }
    if config.resume is not None:
        record["resumed_from"] = read_json(config.resume / "training.json")
    factors = preview_factors(latents[:2000], images[:2000])
    modules = unet.eval(), vae, text_encoder.eval(), tokenizer
    save_folder(config.out, *modules, factors, record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
