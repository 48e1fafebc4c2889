"""minsd vs diffusers on the CPU, on identical random SD 1.5 weights, measured side by
side.

    python benchmarks/cpu.py [--quick] [--no-compile] [--out benchmarks/results/cpu.md]

0. The machine's fp32 matrix-multiply rate (a 4096^3 matmul), the yardstick for the
GFLOP/s columns.
1. UNet forward, batch 2 (guidance), latents 16x16, 32x32, 64x64.
2. The whole pipeline at 256x256, 10 Euler steps, guidance 7.5, same UNet/VAE/CLIP
weights.
3. Peak memory (RSS): a 64x64 UNet forward and the pipeline, each library in a fresh
process. 4. minsd compiled (torch.compile, inductor with weight freezing) vs diffusers
eager, at 16x16, 32x32, 64x64.

Timings alternate between the libraries (A B, B A, ...); each round's pair gives one
ratio, and the tables show the median ratio and the range over rounds: on a shared
machine, a slow spell moves both halves of a pair, and the range shows how far the noise
reaches.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    TINY,
    cpu_name,
    diffusers_pipeline,
    diffusers_pixels,
    diffusers_unet_of,
    matmul_gflops,
    minsd_pixels,
    paired_ratio,
    pipeline_pair,
    rounds,
    table,
    text_encoder_and_vae,
    toy_tokenizer,
    unet_flops,
    unet_pair,
)

from minsd.denoiser import scaled_linear_alphas_cumprod  # noqa: E402
from minsd.pipeline import StableDiffusion  # noqa: E402
from minsd.speed import compile_unet  # noqa: E402
from minsd.unet import UNet, UNetConfig  # noqa: E402

PROMPT = "a photograph of an astronaut riding a horse"


def run_pipeline(which: str, reference, pipe, size: int, steps: int) -> torch.Tensor:
    if which == "diffusers":
        return diffusers_pixels(reference, PROMPT, steps, size)
    return minsd_pixels(pipe, PROMPT, steps, size)


def unet_gflop(cfg: UNetConfig, size: int) -> float:
    return sum(unet_flops(cfg, size).values()) / 1e9


def ratio_cells(
    times: dict, numerator: str, denominator: str, digits: int = 3
) -> list[str]:
    """Median seconds of both sides, then the median paired ratio and its range over
    rounds."""
    median, low, high = paired_ratio(times[numerator], times[denominator])
    return [
        f"{statistics.median(times[denominator]):.{digits}f}",
        f"{statistics.median(times[numerator]):.{digits}f}",
        f"{median:.3f}",
        f"{low:.3f} - {high:.3f}",
    ]


def status_mib(field: str) -> float:
    """A memory line of /proc/self/status (Linux): VmRSS is the resident memory now,
    VmHWM its peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Restart the peak-RSS count (VmHWM) from the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def config_from_json(cfg_json: str) -> UNetConfig:
    return UNetConfig(
        **{
            k: tuple(v) if isinstance(v, list) else v
            for k, v in json.loads(cfg_json).items()
        }
    )


def in_fresh_process(function: str, *args, env: dict | None = None):
    """Run `cpu.<function>(*args)` in a new Python process and return what it printed
    last (JSON)."""
    code = f"import sys; sys.argv = ['cpu.py']; import cpu; cpu.{function}(*{args!r})"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# glibc's malloc raises its mmap threshold as big blocks are freed, and then keeps
# freed tensors' pages on its heap, so peak RSS wanders by ~100 MiB from run to run. A
# fixed threshold hands every block over 64 KiB back to the system when it is freed:
# RSS then follows the live tensors, run after run.
EXACT_RSS = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def memory_child(what: str, which: str, cfg_json: str, size: int, steps: int) -> None:
    """Build one library's UNet (what="unet") or pipeline and run it once. Prints,
    in MiB, the peak
    RSS during the run and how far it rose above the RSS just before it."""
    cfg = config_from_json(cfg_json)
    unet = diffusers_unet_of(cfg).eval() if which == "diffusers" else UNet(cfg).eval()
    with torch.no_grad():
        if what == "unet":
            inputs = torch.randn(2, 4, size, size), torch.tensor([500.0, 500.0])
            context = torch.randn(2, 77, cfg.cross_attention_dim)
            before = status_mib("VmRSS")
            reset_peak_rss()
            unet(*inputs, context)
        else:
            text_encoder, vae = text_encoder_and_vae(tiny=cfg != UNetConfig())
            tokenizer = toy_tokenizer()
            reference = pipe = None
            if which == "diffusers":
                reference = diffusers_pipeline(
                    unet, vae, text_encoder, tokenizer, "cpu", torch.float32
                )
            else:
                pipe = StableDiffusion(
                    unet=unet,
                    vae=vae,
                    text_encoder=text_encoder,
                    tokenizer=tokenizer,
                    alphas_cumprod=scaled_linear_alphas_cumprod(),
                    device="cpu",
                )
            before = status_mib("VmRSS")
            reset_peak_rss()
            run_pipeline(which, reference, pipe, size, steps)
    peak = status_mib("VmHWM")
    print(json.dumps({"peak": peak, "rise": peak - before}))


@torch.no_grad()
def compiled_child(cfg_json: str, size: int, repeats: int) -> None:
    """diffusers eager, minsd eager and minsd compiled (`compile_unet`, as
    `StableDiffusion.compile()`)
    at one latent size. In a process of its own: a cold compile, and no other
    pipelines or graphs in memory."""
    cfg = config_from_json(cfg_json)
    reference_unet, eager = unet_pair(cfg, torch.device("cpu"), torch.float32)
    compiled = compile_unet(eager, torch.device("cpu"))
    context = torch.randn(2, 77, cfg.cross_attention_dim)
    x, t = torch.randn(2, 4, size, size), torch.tensor([500.0, 500.0])
    start = time.perf_counter()
    compiled(x, t, context)
    compile_seconds = time.perf_counter() - start
    difference = (compiled(x, t, context) - eager(x, t, context)).abs().max().item()
    fns = {
        "diffusers": partial(reference_unet, x, t, context),
        "eager": partial(eager, x, t, context),
        "compiled": partial(compiled, x, t, context),
    }
    times = rounds(fns, repeats, "cpu")
    speedup, low, high = paired_ratio(times["diffusers"], times["compiled"])
    row = [
        f"UNet forward, batch 2, {size}x{size}",
        *[f"{statistics.median(times[w]):.3f}" for w in fns],
        f"{unet_gflop(cfg, size) / statistics.median(times['compiled']):.0f}",
        f"{speedup:.2f}x",
        f"{low:.2f}x - {high:.2f}x",
        f"{compile_seconds:.0f}",
        f"{difference:.1e}",
    ]
    print(json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny UNet and few repeats: checks the script runs",
    )
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the report (markdown) here"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = TINY if args.quick else UNetConfig()
    # latent size: rounds
    sizes = {16: 9, 32: 9, 64: 5} if not args.quick else {16: 2, 32: 2}
    pipe_size, pipe_steps, pipe_repeats = (256, 10, 4) if not args.quick else (64, 2, 2)
    rate = matmul_gflops(4096 if not args.quick else 512)
    lines = [
        f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"float32; {'quick mode (tiny UNet)' if args.quick else 'full SD 1.5 UNet, CLIP ViT-L/14 text tower and VAE'}"
        f", random weights. fp32 matmul rate of this CPU in this run: {rate:.0f} GFLOP/s.",
        "",
    ]

    reference, pipe = pipeline_pair(
        cfg, torch.device("cpu"), torch.float32, tiny_parts=args.quick
    )
    rows = []
    context = torch.randn(2, 77, cfg.cross_attention_dim)
    with torch.no_grad():
        for size, repeats in sizes.items():
            x, t = torch.randn(2, 4, size, size), torch.tensor([500.0, 500.0])
            reference.unet(x, t, context), pipe.unet(x, t, context)  # warm-up
            fns = {
                "diffusers": partial(reference.unet, x, t, context),
                "minsd": partial(pipe.unet, x, t, context),
            }
            times = rounds(fns, repeats, "cpu")
            gflop = unet_gflop(cfg, size)
            cells = ratio_cells(times, "minsd", "diffusers")
            rate_cells = [
                f"{gflop / statistics.median(times[w]):.0f}"
                for w in ("diffusers", "minsd")
            ]
            rows.append(
                [
                    f"UNet forward, batch 2, {size}x{size} latents ({8 * size} px)",
                    f"{gflop:.0f}",
                    *cells[:2],
                    *rate_cells,
                    *cells[2:],
                ]
            )
            print(rows[-1], flush=True)
        fns = {
            w: partial(run_pipeline, w, reference, pipe, pipe_size, pipe_steps)
            for w in ("diffusers", "minsd")
        }
        times = rounds(fns, pipe_repeats, "cpu")
        cells = ratio_cells(times, "minsd", "diffusers", digits=2)
        rows.append(
            [
                f"pipeline {pipe_size}x{pipe_size}, {pipe_steps} steps, guidance",
                "",
                *cells[:2],
                "",
                "",
                *cells[2:],
            ]
        )
        print(rows[-1], flush=True)
    header = [
        "what",
        "GFLOP",
        "diffusers s",
        "minsd s",
        "diffusers GFLOP/s",
        "minsd GFLOP/s",
        "minsd / diffusers",
        "range",
    ]
    lines.append(table(rows, header))

    memory_rows = []
    for what, size, steps in (
        ("unet", max(sizes), 0),
        ("pipeline", pipe_size, pipe_steps),
    ):
        rss = {
            w: in_fresh_process(
                "memory_child",
                what,
                w,
                json.dumps(cfg.__dict__),
                size,
                steps,
                env=EXACT_RSS,
            )
            for w in ("diffusers", "minsd")
        }
        label = (
            f"UNet forward, batch 2, {size}x{size}"
            if what == "unet"
            else f"pipeline {size}x{size}, {steps} steps"
        )
        memory_rows.append(
            [label]
            + [
                f"{rss[w][key]:.0f}"
                for key in ("peak", "rise")
                for w in ("diffusers", "minsd")
            ]
            + [
                f"{rss['minsd'][key] / rss['diffusers'][key]:.3f}"
                for key in ("peak", "rise")
            ]
        )
        print(memory_rows[-1], flush=True)
    memory_header = [
        "peak RSS during the run, own process",
        "diffusers MiB",
        "minsd MiB",
        "diffusers rise",
        "minsd rise",
    ]
    lines += [
        "",
        table(memory_rows, [*memory_header, "minsd / diffusers, peak", "rise"]),
    ]

    if not args.no_compile:
        # latent size: rounds
        sizes = {16: 7, 32: 7, 64: 5} if not args.quick else {16: 2}
        rows = [
            in_fresh_process("compiled_child", json.dumps(cfg.__dict__), *item)
            for item in sizes.items()
        ]
        header = [
            "diffusers eager s",
            "minsd eager s",
            "minsd compiled s",
            "compiled GFLOP/s",
        ]
        header += [
            "compiled vs diffusers",
            "range",
            "compile s",
            "max abs(compiled - eager)",
        ]
        lines += ["", table(rows, ["what", *header])]
        print(lines[-1], flush=True)

    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
