"""Seconds per image and it/s: diffusers vs minsd (eager and compiled) on identical random SD 1.5 weights.

    python benchmarks/gpu.py            # CUDA: 512 x 512, 20 steps, batch 1 with guidance, fp16
    python benchmarks/gpu.py --smoke    # any machine: a tiny config, to check that the script runs

it/s counts UNet evaluations of the denoising loop (each a batch of 2 with guidance), measured as
(steps - 1) / (t(steps) - t(1 step)), so text encoding and VAE decoding cancel out. Peak memory is
the most memory allocated during a generation above what was allocated before it, plus the weights.
"""

import argparse
import platform
import statistics
import time

import torch
from common import TINY, diffusers_pixels, minsd_pixels, pipeline_pair, sync, table

from minsd.unet import UNetConfig


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny config on the CPU (or the GPU, if present)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-compile", action="store_true")
    return p.parse_args()


def memory_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def measure(generate, steps: int, repeats: int, device) -> dict:
    """Median seconds per image at `steps` and at 1 step; it/s of the loop; peak extra memory."""
    generate(steps), generate(1)  # warm-up (and, when compiled, the compilation)
    full, single = [], []
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        for n, into in ((steps, full), (1, single)):
            sync(device)
            start = time.perf_counter()
            generate(n)
            sync(device)
            into.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() - before if device.type == "cuda" else 0
    t_full, t_single = statistics.median(full), statistics.median(single)
    return {"s_per_image": t_full, "it_s": (steps - 1) / max(t_full - t_single, 1e-9), "peak_extra": peak}


def main():
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    cfg = TINY if args.smoke else UNetConfig()
    size = 64 if args.smoke else args.size
    steps, repeats = (3, 2) if args.smoke else (args.steps, args.repeats)

    reference, pipe = pipeline_pair(cfg, device, dtype, tiny_parts=args.smoke)
    prompt = "a red circle"

    # diffusers draws fp16 noise in fp16 (other numbers than minsd's fp32 draw): hand it minsd's noise.
    latent_shape = (1, cfg.in_channels, size // 8, size // 8)
    noise = torch.randn(latent_shape, generator=torch.Generator("cpu").manual_seed(0)).to(device, dtype)

    def run_diffusers(n):
        return diffusers_pixels(reference, prompt, n, size, latents=noise)

    def run_minsd(n):
        return minsd_pixels(pipe, prompt, n, size)

    with torch.no_grad():
        eager_pixels = run_minsd(steps)
        difference = (run_diffusers(steps).float().cpu() - eager_pixels).abs().max().item()
    results = {}
    results["diffusers (eager, SDPA)"] = measure(run_diffusers, steps, repeats, device)
    results["minsd (eager)"] = measure(run_minsd, steps, repeats, device)
    if not args.no_compile:
        start = time.perf_counter()
        pipe.compile()
        run_minsd(steps)  # compiles
        compile_seconds = time.perf_counter() - start
        compiled_difference = (run_minsd(steps) - eager_pixels).abs().max().item()
        results["minsd (compiled)"] = measure(run_minsd, steps, repeats, device)
        results["minsd (compiled)"]["compile_s"] = compile_seconds

    weights = sum(memory_bytes(part) for part in (reference.unet, reference.vae, reference.text_encoder))
    base = results["diffusers (eager, SDPA)"]
    rows = []
    for name, r in results.items():
        peak = f"{(r['peak_extra'] + weights) / 2**30:.2f}" if device.type == "cuda" else "-"
        rows.append([name, f"{r['s_per_image']:.3f}", f"{r['it_s']:.1f}", f"{r['it_s'] / base['it_s']:.2f}", peak])
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"device: {gpu}; torch {torch.__version__}; {str(dtype).removeprefix('torch.')}; "
        f"{size} x {size}, {steps} steps, batch 1 with guidance (UNet batch 2)"
    )
    print(f"max |minsd - diffusers| pixel difference after {steps} steps: {difference:.2e}")
    if "minsd (compiled)" in results:
        print(
            f"minsd compile + first run: {results['minsd (compiled)']['compile_s']:.1f} s; "
            f"max |compiled - eager| pixel difference: {compiled_difference:.2e}"
        )
    print(table(rows, ["pipeline", "s / image", "it/s", "it/s vs diffusers", "peak GiB"]))


if __name__ == "__main__":
    main()
