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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .dataset import make_dataset
from .denoiser import scaled_linear_alphas_cumprod
from .loading import diffusers_unet_config, load_unet
from .tokenizer import build_clip_tokenizer
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m minsd.train", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("minsd/default_model"),
        help="diffusers-format folder to write",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-images", type=int, default=20000)
    p.add_argument("--vae-steps", type=int, default=4000)
    p.add_argument("--vae-batch", type=int, default=128)
    p.add_argument("--unet-steps", type=int, default=6000)
    p.add_argument(
        "--unet-stop",
        type=int,
        default=None,
        help="stop the UNet stage after this many steps (the learning-rate schedule still spans --unet-steps)",
    )
    p.add_argument("--unet-batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
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
        help="a folder this command wrote: keep its VAE and tokenizer, continue training its UNet and text encoder",
    )
    p.add_argument(
        "--merges",
        type=Path,
        default=None,
        help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: fetch)",
    )
    p.add_argument(
        "--model-max-length",
        type=int,
        default=16,
        help="text tokens; captions are ~9 (SD: 77)",
    )
    return p.parse_args(argv)


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


def train_vae(vae, images: torch.Tensor, args) -> int:
    """L1 reconstruction + a tiny KL term (as SD's VAE, without the GAN and perceptual
    losses)."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed)
    deadline = Deadline(args.max_minutes)
    bar = tqdm(range(args.vae_steps), desc="VAE", unit="step")
    for step in bar:
        batch = images[
            torch.randint(len(images), (args.vae_batch,), generator=generator)
        ]
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        loss = F.l1_loss(reconstruction, batch) + 1e-6 * posterior.kl().mean()
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.vae_steps, args.lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if deadline.passed():
            return step + 1
    return args.vae_steps


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
    latents,
    token_ids,
    empty_ids,
    args,
    callback=None,
    progress: bool = True,
) -> tuple[int, list[torch.Tensor]]:
    """eps-prediction on SD's schedule: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t)
    eps, loss |eps - F(x_t, t)|^2.

    Min-SNR-5 weighting (Hang et al. 2023) evens out the timesteps; 10% of the
    captions are replaced by the empty prompt, so that the model also learns the
    unconditional D for guidance. Returns the steps taken and an exponential moving
    average of the weights (decay 0.999). callback, if given, is called after every
    step with {"step", "loss"} (the step just taken, from 0).
    """
    device = latents.device
    alphas_cumprod = scaled_linear_alphas_cumprod().float().to(device)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed + 1)
    deadline = Deadline(args.max_minutes)
    bar = tqdm(
        range(args.unet_stop or args.unet_steps),
        desc="UNet + text encoder",
        unit="step",
        disable=not progress,
    )
    for step in bar:
        index = torch.randint(len(latents), (args.unet_batch,), generator=generator)
        x0, ids = latents[index], token_ids[index]
        drop = torch.rand(args.unet_batch, generator=generator) < 0.1
        ids = torch.where(drop[:, None].to(device), empty_ids, ids)  # (B, T)
        t = torch.randint(0, 1000, (args.unet_batch,), generator=generator).to(device)
        eps = torch.randn(x0.shape, generator=generator).to(device)
        abar = alphas_cumprod[t][:, None, None, None]
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        context = text_encoder(ids).last_hidden_state  # (B, T, D)
        prediction = unet(x_t, t.float(), context)
        snr = (abar / (1 - abar)).flatten()
        weight = snr.clamp(max=5.0) / snr
        loss = (weight * (prediction - eps).pow(2).mean(dim=(1, 2, 3))).mean()
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.unet_steps, args.lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - 0.999)
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


def train_briefly(
    pipe,
    seconds: float,
    steps: int,
    config: UNetConfig = BRIEF_UNET_CONFIG,
    n_images: int = 512,
    batch: int = 32,
    lr: float = 2e-3,
    checkpoint_times: tuple[float, ...] = (0.125, 0.25, 0.5),
    seed: int = 0,
) -> BriefRun:
    """Train a fresh UNet of `config` with `train_unet`, in the latent space of
    `pipe`'s VAE and with its text encoder (both frozen), for at most `steps` steps
    or `seconds` seconds, whichever ends first.

    The learning rate follows `cosine_lr` over `steps`, as --unet-steps does. A copy
    of the UNet is kept before the first step, at each of `checkpoint_times`
    (fractions of `seconds` or of `steps`, whichever comes first) and at the end.
    """
    images, scenes = make_dataset(n_images, seed=seed, image_size=pipe.default_size)
    # (N, 3, H, W) in [0, 1]
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    latents = pipe.encode(pixels)  # (N, 4, h, w), scaled: the x_0 of training

    def ids_of(captions: list[str]) -> torch.Tensor:
        max_length = pipe.tokenizer.model_max_length
        encoded = pipe.tokenizer(
            captions, padding="max_length", max_length=max_length, truncation=True
        )
        return torch.tensor(encoded.input_ids, device=pipe.device)

    token_ids = ids_of([s.caption for s in scenes])  # (N, T)
    empty_ids = ids_of([""])  # (1, T)
    # a seeded initialisation, leaving the global generator as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # float32, also where pipe samples in float16
        unet = UNet(config).to(pipe.device).train()
    # frozen: AdamW skips it
    text_encoder = copy.deepcopy(pipe.text_encoder).float().requires_grad_(False)
    args = argparse.Namespace(
        lr=lr,
        unet_steps=steps,
        unet_stop=None,
        unet_batch=batch,
        seed=seed,
        max_minutes=seconds / 60,
    )

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
        token_ids,
        empty_ids,
        args,
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


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    start = time.time()

    images_np, scenes = make_dataset(args.train_images, seed=args.seed)
    held_out_np, _ = make_dataset(512, seed=args.seed + 10_000)
    images, held_out = (
        to_unit_range(images_np, device),
        to_unit_range(held_out_np, device),
    )
    if args.resume is None:
        tokenizer = build_clip_tokenizer(
            clip_merges(args.merges), model_max_length=args.model_max_length
        )
        vae = make_vae().to(device)
        vae_steps = train_vae(vae.train(), images, args)
    else:
        from diffusers import AutoencoderKL
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(args.resume / "tokenizer")
        vae, vae_steps = (
            AutoencoderKL.from_pretrained(args.resume / "vae").to(device),
            0,
        )
    vae.eval().requires_grad_(False)
    vae_psnr = reconstruction_psnr(vae, held_out)
    print(f"VAE: {vae_steps} steps, held-out PSNR {vae_psnr:.2f} dB", flush=True)
    latents = encode(vae, images)
    if args.resume is None:
        # unit variance, like SD's 0.18215
        vae.register_to_config(scaling_factor=float(1 / latents.std()))
    latents = latents * vae.config.scaling_factor

    def ids_of(captions: list[str]) -> torch.Tensor:
        encoded = tokenizer(
            captions,
            padding="max_length",
            max_length=args.model_max_length,
            truncation=True,
        )
        return torch.tensor(encoded.input_ids, device=device)

    token_ids = ids_of([s.caption for s in scenes])  # (N, T)
    empty_ids = ids_of([""])  # (1, T)
    if args.resume is None:
        unet = UNet(UNET_CONFIG).to(device).train()
        text_encoder = (
            make_text_encoder(len(tokenizer), args.model_max_length).to(device).train()
        )
    else:
        from transformers import CLIPTextModel

        unet = load_unet(args.resume / "unet").to(device).train()
        text_encoder = (
            CLIPTextModel.from_pretrained(args.resume / "text_encoder")
            .to(device)
            .train()
        )
    # the (min-SNR weighted) loss of every UNet step, for the record's curve
    losses = []
    unet_steps, ema = train_unet(
        unet,
        text_encoder,
        latents,
        token_ids,
        empty_ids,
        args,
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
        "args": {k: str(v) for k, v in vars(args).items()},
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
    if args.resume is not None:
        record["resumed_from"] = json.loads((args.resume / "training.json").read_text())
    factors = preview_factors(latents[:2000], images[:2000])
    save_folder(
        args.out, unet.eval(), vae, text_encoder.eval(), tokenizer, factors, record
    )
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
