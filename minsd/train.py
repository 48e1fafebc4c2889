"""Train minsd's default model: a tiny Stable Diffusion on procedural shapes
(`minsd/dataset.py`).

    python -m minsd.train --out minsd/default_model --unet-stop 1332
    python -m minsd.train --out minsd/default_model --resume minsd/default_model \
        --unet-steps 1400 --unet-batch 1024 --lr 5e-4

(the two runs that made the shipped model, on one H200 in 7.4 minutes; see its
training.json).

Same family and code paths as SD 1.5: an AutoencoderKL with 4 latent channels
(diffusers), a CLIPTextModel with the real CLIP BPE tokenizer (transformers), and
minsd's own UNet, trained to predict eps on SD's scaled_linear 1000-step schedule with
10% of the captions dropped, so that minsd's unchanged denoiser, sampler, guidance and
pipeline run it. 32 x 32 images and a factor-4 VAE give 8 x 8 x 4 latents.

Three stages: the VAE (reconstruction), then the UNet and the text encoder together
(denoising in the frozen VAE's latent space), then the diffusers-format folder. Runs on
CUDA when present.
"""

import argparse
import copy
import gzip
import json
import math
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checks import is_positive_integer, resolve_device
from .configs import diffusers_unet_config
from .dataset import BACKGROUNDS, COLOURS, SHAPES, Scene, make_dataset, render
from .denoiser import scaled_linear_alphas_cumprod
from .loading import load_unet
from .tokenizer import build_clip_tokenizer, token_ids
from .unet import UNet, UNetConfig

# ships OpenAI's BPE merges, bpe_simple_vocab_16e6.txt.gz
CLIP_WHEEL = "clip-anytorch==2.6.0"
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
    merges: Path | None = None  # CLIP's bpe_simple_vocab_16e6.txt.gz (None: fetch)
    model_max_length: int = 16  # text tokens; the captions have ~9 (SD 1.5: 77)

    def __post_init__(self) -> None:
        counts = {
            "train_images": self.train_images,
            "vae_steps": self.vae_steps,
            "vae_batch": self.vae_batch,
            "unet_steps": self.unet_steps,
            "unet_batch": self.unet_batch,
            "model_max_length": self.model_max_length,
        }
        for name, value in counts.items():
            if not is_positive_integer(value):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        stop = self.unet_stop
        if stop is not None and not (
            is_positive_integer(stop) and stop <= self.unet_steps
        ):
            raise ValueError(
                f"unet_stop must be None or an integer from 1 to unet_steps "
                f"({self.unet_steps}), got {stop!r}"
            )
        if not self.lr >= 0:
            raise ValueError(f"lr must be >= 0, got {self.lr!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(
                f"max_minutes must be None or > 0, got {self.max_minutes!r}"
            )


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The command line (sys.argv[1:] if argv is None) -> a TrainConfig."""
    p = argparse.ArgumentParser(
        prog="python -m minsd.train", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", type=Path, default=TrainConfig.out, help="folder to write")
    p.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--train-images", type=int, default=TrainConfig.train_images)
    p.add_argument("--vae-steps", type=int, default=TrainConfig.vae_steps)
    p.add_argument("--vae-batch", type=int, default=TrainConfig.vae_batch)
    p.add_argument(
        "--unet-steps",
        type=int,
        default=TrainConfig.unet_steps,
        help="the length of the UNet's learning-rate schedule",
    )
    p.add_argument(
        "--unet-stop",
        type=int,
        default=None,
        help="stop the UNet stage after this many steps (the schedule still spans "
        "--unet-steps)",
    )
    p.add_argument("--unet-batch", type=int, default=TrainConfig.unet_batch)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop each stage early after this much time",
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="a folder this command wrote: keep its VAE and tokenizer, continue "
        "training its UNet and text encoder",
    )
    p.add_argument(
        "--merges",
        type=Path,
        default=None,
        help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: fetch from PyPI)",
    )
    p.add_argument(
        "--model-max-length",
        type=int,
        default=TrainConfig.model_max_length,
        help="text tokens; captions are ~9 (SD: 77)",
    )
    try:
        return TrainConfig(**vars(p.parse_args(argv)))
    except ValueError as err:  # a setting out of range: say so as argparse does
        p.error(str(err))


# --------------------------------------------------------------------------------------
# Components


def clip_merges(path: Path | None) -> list[tuple[str, str]]:
    """OpenAI CLIP's 48,894 BPE merges, from the given .gz or from the clip-anytorch
    wheel on PyPI."""
    if path is None:
        folder = Path(tempfile.mkdtemp())
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                CLIP_WHEEL,
                "-d",
                folder,
            ],
            check=True,
        )
        wheel = zipfile.ZipFile(next(folder.glob("*.whl")))
        data = wheel.read("clip/bpe_simple_vocab_16e6.txt.gz")
    else:
        data = path.read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    # The vocabulary has 49,408 entries: 512 byte symbols, 48,894 merges, 2
    # special tokens.
    return [tuple(line.split()) for line in lines[1 : 49408 - 512 - 2 + 1]]


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
        # few groups: GroupNorm must not normalise away the colours of flat
        # images
        norm_num_groups=2,
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
    return (
        torch.from_numpy(images)
        .permute(0, 3, 1, 2)
        .float()
        .div(127.5)
        .sub(1)
        .to(device)
    )


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
    return torch.cat(
        [
            vae.encode(images[i : i + batch]).latent_dist.mode()
            for i in range(0, len(images), batch)
        ]
    )


@torch.no_grad()
def reconstruction_psnr(vae, images: torch.Tensor) -> float:
    reconstructions = torch.cat(
        [vae.decode(z).sample for z in encode(vae, images).split(512)]
    )
    return psnr(reconstructions, images)


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


# A UNet small enough to learn something in seconds on one CPU thread (for the book's
# training chapter).
BRIEF_UNET_CONFIG = UNetConfig(
    sample_size=8,
    block_out_channels=(32, 64),  # two levels: 8 x 8 and 4 x 4
    layers_per_block=1,
    num_heads=4,
    cross_attention_dim=32,  # the default model's text encoder
    norm_num_groups=8,
)


@dataclass
class BriefRun:
    """What `train_briefly` returns: the loss of every step and copies of the UNet taken
    during the run."""

    losses: list[float]  # the (min-SNR weighted) loss of each step
    seconds: list[float]  # the time of each step's end, from the start of training
    # (steps taken, seconds, the UNet after them), in order
    checkpoints: list[tuple[int, float, UNet]]


def centred_scenes(
    kinds: list[tuple[str, str, str]], n: int, seed: int, image_size: int = 32
) -> list[Scene]:
    """n scenes that cycle through `kinds`, (colour, shape, background) triples, each
    shape centred in its image and large (0.6 to 0.8 of its width, at random): a
    target small enough to learn in seconds (the book's live run)."""
    unknown = [
        kind
        for kind in kinds
        if kind[0] not in COLOURS or kind[1] not in SHAPES or kind[2] not in BACKGROUNDS
    ]
    if unknown:
        raise ValueError(
            f"unknown (colour, shape, background) {unknown}; allowed: "
            f"{list(COLOURS)}, {list(SHAPES)}, {list(BACKGROUNDS)}"
        )
    rng = np.random.default_rng(seed)
    centre = image_size / 2
    scenes = []
    for k in range(n):
        colour, shape, background = kinds[k % len(kinds)]
        size = rng.uniform(0.6, 0.8) * image_size
        scenes.append(Scene(shape, colour, background, centre, centre, size))
    return scenes


def train_briefly(
    pipe,
    config: TrainConfig,
    kinds: list[tuple[str, str, str]] | None = None,
    unet_config: UNetConfig = BRIEF_UNET_CONFIG,
    checkpoint_times: tuple[float, ...] = (0.25, 0.5),
) -> BriefRun:
    """Train a fresh UNet of `unet_config` with `train_unet`, in the latent space of
    `pipe`'s VAE and with its text encoder (both frozen), on `config.train_images`
    images, for `config.unet_stop or config.unet_steps` steps or until
    `config.max_minutes` have passed.

    The images are minsd.dataset's random scenes, or, if `kinds` is given, those
    (colour, shape, background) triples with each shape centred (`centred_scenes`).
    A copy of the UNet is kept before the first step, at each of `checkpoint_times`
    (fractions of the steps or of the time, whichever comes first) and at the end.
    """
    size = pipe.default_size
    if kinds is None:
        images, scenes = make_dataset(config.train_images, config.seed, size)
    else:
        scenes = centred_scenes(kinds, config.train_images, config.seed, size)
        images = np.stack([render(scene, size) for scene in scenes])  # (N, H, W, 3)
    # (N, 3, H, W) in [0, 1]
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    latents = pipe.encode(pixels)  # (N, 4, h, w), scaled: the y of training
    captions = token_ids(pipe.tokenizer, [s.caption for s in scenes], pipe.device)
    empty = token_ids(pipe.tokenizer, [""], pipe.device)  # (1, T)
    # a seeded initialisation, leaving the global generator as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        # float32, also where pipe samples in float16
        unet = UNet(unet_config).to(pipe.device).train()
    # frozen: AdamW skips it
    text_encoder = copy.deepcopy(pipe.text_encoder).float().requires_grad_(False)
    steps = config.unet_stop or config.unet_steps
    seconds = math.inf if config.max_minutes is None else 60 * config.max_minutes

    def snapshot(steps_taken: int, elapsed: float) -> tuple[int, float, UNet]:
        return steps_taken, elapsed, copy.deepcopy(unet).eval().requires_grad_(False)

    run = BriefRun(losses=[], seconds=[], checkpoints=[snapshot(0, 0.0)])
    pending = sorted(checkpoint_times)
    start = time.monotonic()

    def record(step: dict) -> None:
        elapsed = time.monotonic() - start
        run.losses.append(step["loss"])
        run.seconds.append(elapsed)
        while pending and (
            elapsed >= pending[0] * seconds or step["step"] + 1 >= pending[0] * steps
        ):
            pending.pop(0)
            run.checkpoints.append(snapshot(step["step"] + 1, elapsed))

    taken, _ = train_unet(
        unet,
        text_encoder,
        latents,
        captions,
        empty,
        config,
        callback=record,
        progress=False,
    )
    run.checkpoints.append(snapshot(taken, time.monotonic() - start))
    return run


# --------------------------------------------------------------------------------------
# Stage 3: the folder


def loss_curve(losses: list[float], window: int = 10) -> list[list[float]]:
    """[[last step of the window, mean loss over the window], ...]: the training curve,
    small enough to keep."""
    return [
        [
            min(i + window, len(losses)),
            round(sum(losses[i : i + window]) / len(losses[i : i + window]), 5),
        ]
        for i in range(0, len(losses), window)
    ]


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

    out.mkdir(parents=True, exist_ok=True)
    (out / "unet").mkdir(exist_ok=True)
    (out / "unet" / "config.json").write_text(
        json.dumps(diffusers_unet_config(unet.config), indent=2) + "\n"
    )
    state = {k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}
    save_file(state, out / "unet" / "diffusion_pytorch_model.safetensors")
    vae.save_pretrained(out / "vae", safe_serialization=True)
    (out / "vae" / "preview_factors.json").write_text(
        json.dumps(factors.tolist()) + "\n"
    )
    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(out / "tokenizer")
    EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="linspace",
    ).save_pretrained(out / "scheduler")
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": [None, None],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")


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
        merges = clip_merges(config.merges)
        tokenizer = build_clip_tokenizer(merges, config.model_max_length)
        vae = make_vae().to(device)
        vae_steps = train_vae(vae.train(), images, config)
    else:
        from diffusers import AutoencoderKL
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(config.resume / "tokenizer")
        if tokenizer.model_max_length != config.model_max_length:
            raise ValueError(
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
    # the (min-SNR weighted) loss of every UNet step, for the record's curve
    losses = []
    unet_steps, ema = train_unet(
        unet,
        text_encoder,
        latents,
        captions,
        empty,
        config,
        callback=lambda step: losses.append(step["loss"]),
    )
    with torch.no_grad():
        for p, average in zip(
            list(unet.parameters()) + list(text_encoder.parameters()), ema
        ):
            p.copy_(average)

    record = {
        "command": "python -m minsd.train "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        # every setting, as the command line gave it, with the device it resolved to
        "args": {k: str(v) for k, v in asdict(config).items()}
        | {"device": str(device)},
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else "cpu",
        "torch": torch.__version__,
        "vae_steps": vae_steps,
        "unet_steps": unet_steps,
        "vae_held_out_psnr_db": round(vae_psnr, 2),
        "minutes": round((time.time() - start) / 60, 1),
        "unet_loss_curve": loss_curve(losses),
    }
    if config.resume is not None:
        resumed_from = (config.resume / "training.json").read_text()
        record["resumed_from"] = json.loads(resumed_from)
    factors = preview_factors(latents[:2000], images[:2000])
    save_folder(
        config.out, unet.eval(), vae, text_encoder.eval(), tokenizer, factors, record
    )
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
