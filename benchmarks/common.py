"""Shared pieces of the benchmarks: SD 1.5-sized components with random weights, timers,
a table."""

import platform
import statistics
import time
from pathlib import Path

import torch

from minsd.configs import diffusers_unet_config
from minsd.unet import UNet, UNetConfig

TINY = UNetConfig(
    sample_size=8,
    block_out_channels=(32, 64, 64, 64),
    num_heads=2,
    cross_attention_dim=32,
    norm_num_groups=8,
)


def unet_flops(cfg: UNetConfig, size: int, batch: int = 2) -> dict[str, int]:
    """FLOPs of one UNet forward at `batch` (2: one image with guidance) with size x
    size latents, per operator
    ("convolution", "addmm", "mm", "bmm"), counted on meta tensors: attention is
    counted as its two batched matmuls."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet(cfg)
        x, t = torch.zeros(batch, 4, size, size), torch.zeros(batch)
        context = torch.zeros(batch, 77, cfg.cross_attention_dim)
    with FlopCounterMode(display=False) as counter:
        unet(x, t, context)
    return {
        str(op).split(".")[-1]: n
        for op, n in counter.get_flop_counts()["Global"].items()
    }


def diffusers_unet_of(cfg: UNetConfig):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(diffusers_unet_config(cfg))


def unet_pair(cfg: UNetConfig, device, dtype):
    """diffusers' UNet with random weights and minsd's UNet holding the very same
    tensors' values."""
    torch.manual_seed(0)
    reference = diffusers_unet_of(cfg).to(device, dtype).eval()
    with torch.device("meta"):
        unet = UNet(cfg)
    unet.load_state_dict(
        {k: v.clone() for k, v in reference.state_dict().items()},
        strict=True,
        assign=True,
    )
    return reference, unet.eval()


def text_encoder_and_vae(tiny: bool):
    """CLIP ViT-L/14's text tower and SD's VAE at full size (random weights), or tiny
    stand-ins."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    if tiny:
        text = CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
        )
        vae = AutoencoderKL(
            block_out_channels=(8, 16, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            norm_num_groups=4,
            layers_per_block=1,
        )
    else:
        text = CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            sample_size=512,
        )
    return CLIPTextModel(text).eval(), vae.eval()


def diffusers_pipeline(unet, vae, text_encoder, tokenizer, device, dtype):
    """diffusers' text-to-image pipeline on the given components, with SD 1.5's Euler
    schedule (linspace)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="linspace",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def toy_tokenizer():
    """A CLIP tokenizer with two merges: the text encoders here have random weights, any
    vocabulary will do."""
    from minsd.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer([("r", "e"), ("re", "d</w>")])


def pipeline_pair(cfg: UNetConfig, device, dtype, tiny_parts: bool):
    """diffusers' and minsd's pipelines sharing one VAE and text encoder, UNets with
    equal weights."""
    from minsd.denoiser import scaled_linear_alphas_cumprod
    from minsd.pipeline import StableDiffusion

    reference_unet, unet = unet_pair(cfg, device, dtype)
    text_encoder, vae = text_encoder_and_vae(tiny=tiny_parts)
    tokenizer = toy_tokenizer()
    reference = diffusers_pipeline(
        reference_unet, vae, text_encoder, tokenizer, device, dtype
    )
    pipe = StableDiffusion(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        alphas_cumprod=scaled_linear_alphas_cumprod(),
        device=device,
        dtype=dtype,
        name="random",
    )
    return reference, pipe


def diffusers_pixels(
    reference, prompt: str, steps: int, size: int, latents=None, num_images: int = 1
) -> torch.Tensor:
    """diffusers' images for a prompt: guidance 7.5, seed 0 (or the given starting
    latents), (B, 3, H, W)."""
    generator = torch.Generator("cpu").manual_seed(0)
    return reference(
        prompt,
        num_images_per_prompt=num_images,
        num_inference_steps=steps,
        guidance_scale=7.5,
        height=size,
        width=size,
        generator=generator,
        latents=latents,
        output_type="pt",
    ).images


def minsd_pixels(
    pipe, prompt: str, steps: int, size: int, num_images: int = 1
) -> torch.Tensor:
    """minsd's images for the same prompt, guidance 7.5, seed 0: (B, 3, H, W)."""
    return pipe(
        prompt,
        steps=steps,
        guidance=7.5,
        height=size,
        width=size,
        seed=0,
        num_images=num_images,
        progress=False,
    ).pixels


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    """This CPU's fp32 matrix-multiply rate: the median over `repeats` of an n x n x n
    product."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    times = rounds({"matmul": lambda: a @ b}, repeats, "cpu")["matmul"]
    return 2 * n**3 / statistics.median(times) / 1e9


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def rounds(fns: dict, repeats: int, device) -> dict[str, list[float]]:
    """Each function's seconds over `repeats` rounds. Every round runs each function
    once, the order
    reversed every other round (A B, B A, ...), so a slow spell of a shared machine
    hits both sides."""
    times = {name: [] for name in fns}
    for i in range(repeats):
        for name in list(fns) if i % 2 == 0 else reversed(list(fns)):
            times[name].append(timed(fns[name], device))
    return times


def paired_ratio(
    numerator: list[float], denominator: list[float]
) -> tuple[float, float, float]:
    """Median, min and max over rounds of numerator / denominator, each round's pair
    measured together."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return statistics.median(ratios), min(ratios), max(ratios)


def table(rows: list[list], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(row: list) -> str:
        return "| " + " | ".join(str(x).ljust(w) for x, w in zip(row, widths)) + " |"

    return "\n".join(
        [
            line(header),
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *map(line, rows),
        ]
    )


def cpu_name() -> str:
    """The processor's model name, as the reports print it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
