"""minsd vs diffusers on the CPU, on identical random SD 1.5 weights, measured side by side.

    python benchmarks/cpu.py [--quick] [--out benchmarks/results/cpu.md]

1. UNet forward, batch 2 (guidance), latents 16x16, 32x32, 64x64: alternating runs, medians.
2. The whole pipeline at 256x256, 10 Euler steps, guidance 7.5, same UNet/VAE/CLIP weights.
3. Peak memory (RSS) of that pipeline run, each library in a fresh process.
4. minsd compiled (torch.compile, inductor with weight freezing): compile time and speed.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    alternate,
    diffusers_pipeline,
    diffusers_unet_of,
    table,
    text_encoder_and_vae,
    unet_pair,
)

from minsd.denoiser import scaled_linear_alphas_cumprod  # noqa: E402
from minsd.pipeline import StableDiffusion  # noqa: E402
from minsd.tokenizer import build_clip_tokenizer  # noqa: E402
from minsd.unet import UNetConfig  # noqa: E402

PROMPT = "a photograph of an astronaut riding a horse"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build(cfg: UNetConfig, tiny_parts: bool):
    """diffusers' and minsd's pipelines sharing one VAE and text encoder, UNets with equal weights."""
    reference_unet, unet = unet_pair(cfg, torch.device("cpu"), torch.float32)
    text_encoder, vae = text_encoder_and_vae(tiny=tiny_parts)
    tokenizer = build_clip_tokenizer([("r", "e"), ("re", "d</w>")])
    reference = diffusers_pipeline(reference_unet, vae, text_encoder, tokenizer, "cpu", torch.float32)
    pipe = StableDiffusion(unet, vae, text_encoder, tokenizer, scaled_linear_alphas_cumprod(), "cpu", torch.float32)
    return reference, pipe


def run_pipeline(which: str, reference, pipe, size: int, steps: int):
    if which == "diffusers":
        generator = torch.Generator("cpu").manual_seed(0)
        return reference(
            PROMPT,
            num_inference_steps=steps,
            guidance_scale=7.5,
            height=size,
            width=size,
            generator=generator,
            output_type="pt",
        ).images
    return pipe(PROMPT, steps=steps, guidance=7.5, height=size, width=size, seed=0, progress=False).pixels


def memory_child(which: str, cfg_json: str, size: int, steps: int) -> None:
    """In a fresh process: build only one library's pipeline, run it once, print the peak RSS in MiB."""
    from minsd.unet import UNet

    cfg = UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(cfg_json).items()})
    text_encoder, vae = text_encoder_and_vae(tiny=cfg != UNetConfig())
    tokenizer = build_clip_tokenizer([("r", "e"), ("re", "d</w>")])
    reference = pipe = None
    if which == "diffusers":
        reference = diffusers_pipeline(
            diffusers_unet_of(cfg).eval(), vae, text_encoder, tokenizer, "cpu", torch.float32
        )
    else:
        pipe = StableDiffusion(UNet(cfg).eval(), vae, text_encoder, tokenizer, scaled_linear_alphas_cumprod(), "cpu")
    with torch.no_grad():
        run_pipeline(which, reference, pipe, size, steps)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def peak_rss(which: str, cfg: UNetConfig, size: int, steps: int) -> float:
    cfg_json = json.dumps(cfg.__dict__)
    code = f"import sys; sys.argv=['cpu.py']; import cpu; cpu.memory_child({which!r}, {cfg_json!r}, {size}, {steps})"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny UNet and few repeats: checks the script runs")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = (
        UNetConfig(
            sample_size=8, block_out_channels=(32, 64, 64, 64), num_heads=2, cross_attention_dim=32, norm_num_groups=8
        )
        if args.quick
        else UNetConfig()
    )
    sizes = {16: 5, 32: 5, 64: 3} if not args.quick else {16: 2, 32: 2}
    pipe_size, pipe_steps, pipe_repeats = (256, 10, 3) if not args.quick else (64, 2, 2)
    lines = [
        f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"float32; {'quick mode (tiny UNet)' if args.quick else 'full SD 1.5 UNet, CLIP ViT-L/14 text tower and VAE'}"
        ", random weights. Medians of alternating runs.",
        "",
    ]

    reference, pipe = build(cfg, tiny_parts=args.quick)
    rows = []
    context = torch.randn(2, 77, cfg.cross_attention_dim)
    with torch.no_grad():
        for size, repeats in sizes.items():
            x, t = torch.randn(2, 4, size, size), torch.tensor([500.0, 500.0])
            reference.unet(x, t, context), pipe.unet(x, t, context)  # warm-up
            med = alternate(
                {"diffusers": partial(reference.unet, x, t, context), "minsd": partial(pipe.unet, x, t, context)},
                repeats,
                "cpu",
            )
            rows.append(
                [
                    f"UNet forward, batch 2, {size}x{size} latents ({8 * size} px)",
                    f"{med['diffusers']:.3f}",
                    f"{med['minsd']:.3f}",
                    f"{med['minsd'] / med['diffusers']:.3f}",
                ]
            )
            print(rows[-1], flush=True)
        med = alternate(
            {w: partial(run_pipeline, w, reference, pipe, pipe_size, pipe_steps) for w in ("diffusers", "minsd")},
            pipe_repeats,
            "cpu",
        )
        rows.append(
            [
                f"pipeline {pipe_size}x{pipe_size}, {pipe_steps} steps, guidance",
                f"{med['diffusers']:.2f}",
                f"{med['minsd']:.2f}",
                f"{med['minsd'] / med['diffusers']:.3f}",
            ]
        )
        print(rows[-1], flush=True)
    lines.append(table(rows, ["what", "diffusers s", "minsd s", "minsd / diffusers"]))

    rss = {w: peak_rss(w, cfg, pipe_size, pipe_steps) for w in ("diffusers", "minsd")}
    lines += [
        "",
        table(
            [
                [
                    f"peak RSS, pipeline {pipe_size}x{pipe_size} (own process)",
                    f"{rss['diffusers']:.0f}",
                    f"{rss['minsd']:.0f}",
                    f"{rss['minsd'] / rss['diffusers']:.3f}",
                ]
            ],
            ["what", "diffusers MiB", "minsd MiB", "minsd / diffusers"],
        ),
    ]
    print(lines[-1], flush=True)

    if not args.no_compile:
        size = 64 if not args.quick else 16
        x, t = torch.randn(2, 4, size, size), torch.tensor([500.0, 500.0])
        with torch.no_grad():
            eager = pipe.unet
            start = time.perf_counter()
            pipe.compile()
            pipe.unet(x, t, context)
            compile_s = time.perf_counter() - start
            difference = (pipe.unet(x, t, context) - eager(x, t, context)).abs().max().item()
            med = alternate(
                {"diffusers": partial(reference.unet, x, t, context), "compiled": partial(pipe.unet, x, t, context)},
                sizes.get(size, 3),
                "cpu",
            )
        lines += [
            "",
            table(
                [
                    [
                        f"UNet forward, batch 2, {size}x{size}",
                        f"{med['diffusers']:.3f}",
                        f"{med['compiled']:.3f}",
                        f"{med['diffusers'] / med['compiled']:.2f}x",
                        f"{compile_s:.0f}",
                    ]
                ],
                ["what", "diffusers eager s", "minsd compiled s", "speed-up", "compile s"],
            ),
        ]
        lines.append(f"\nCompiled vs eager max |difference|: {difference:.1e}.")
        print(lines[-2], flush=True)

    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
