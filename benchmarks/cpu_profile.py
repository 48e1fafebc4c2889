"""Where a UNet forward spends its time on the CPU: diffusers eager, minsd eager, minsd
compiled.

    python benchmarks/cpu_profile.py [--size 64] [--quick] [--out
    benchmarks/results/cpu_profile.md]

One profiled forward each (batch 2, random SD 1.5 weights, after a warm-up), the
operators grouped into convolutions, linear layers, attention and everything else, with
each group's GFLOP/s.
"""

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from common import TINY, matmul_gflops, table, unet_flops, unet_pair  # noqa: E402

from minsd.speed import compile_unet  # noqa: E402
from minsd.unet import UNetConfig  # noqa: E402

# ATen (eager) and inductor (compiled) operators by group; the compiled graph's own
# fused kernels and every small operator count as "everything else". Eager names are
# the same on every CPU; which compiled kernels inductor hands to oneDNN/MKL (and so
# under these names) depends on the CPU.
GROUPS = {
    "convolutions": ("aten::mkldnn_convolution", "mkldnn::_convolution_pointwise"),
    "linear layers": (
        "aten::addmm",
        "aten::mm",
        "mkl::_mkl_linear",
        "mkldnn::_linear_pointwise",
    ),
    "attention": ("aten::_scaled_dot_product_flash_attention",),
}
# FLOP counter names (attention on meta tensors is counted as its two batched matmuls).
GROUP_FLOPS = {
    "convolutions": ("convolution",),
    "linear layers": ("addmm", "mm"),
    "attention": ("bmm",),
}


def flops_by_group(cfg: UNetConfig, size: int) -> dict:
    counts = unet_flops(cfg, size)
    return {
        group: sum(counts.get(name, 0) for name in names)
        for group, names in GROUP_FLOPS.items()
    }


def seconds_by_group(fn) -> dict:
    """Self CPU seconds of one call of fn, summed per group; the rest is 'everything
    else'."""
    fn()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    seconds = dict.fromkeys([*GROUPS, "everything else"], 0.0)
    for event in prof.key_averages():
        group = next(
            (g for g, prefixes in GROUPS.items() if event.key.startswith(prefixes)),
            "everything else",
        )
        seconds[group] += event.self_cpu_time_total / 1e6
    seconds["total"] = sum(seconds.values())
    return seconds


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", type=int, default=64, help="latent size (64 = 512 px)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny UNet: checks the script runs"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the report (markdown) here"
    )
    args = parser.parse_args()
    cfg = TINY if args.quick else UNetConfig()
    reference, unet = unet_pair(cfg, torch.device("cpu"), torch.float32)
    x, t = torch.randn(2, 4, args.size, args.size), torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, cfg.cross_attention_dim)

    # what StableDiffusion.compile() does
    compiled = compile_unet(unet, torch.device("cpu"))
    columns = {
        "diffusers eager": seconds_by_group(lambda: reference(x, t, context)),
        "minsd eager": seconds_by_group(lambda: unet(x, t, context)),
        "minsd compiled": seconds_by_group(lambda: compiled(x, t, context)),
    }
    flops = flops_by_group(cfg, args.size)
    rows = []
    for group in [*GROUPS, "everything else", "total"]:
        gflop = flops.get(group, sum(flops.values()) if group == "total" else 0) / 1e9
        row = [group, f"{gflop:.0f}" if gflop else ""]
        for seconds in columns.values():
            rate = (
                f" ({gflop / seconds[group]:.3g})" if gflop and seconds[group] else ""
            )
            row.append(f"{seconds[group]:.2f}{rate}")
        rows.append(row)
    report = "\n".join(
        [
            f"UNet forward, batch 2, {args.size}x{args.size} latents, {'tiny UNet' if args.quick else 'SD 1.5'}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; this CPU's fp32 matmul rate in this "
            f"run: {matmul_gflops(4096 if not args.quick else 512):.0f} GFLOP/s. Seconds (GFLOP/s) from one "
            "profiled forward each.",
            "",
            table(rows, ["operators", "GFLOP", *columns]),
        ]
    )
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
