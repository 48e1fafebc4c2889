"""Seconds per image of the default model: 20 Euler steps with guidance 7.5 and the VAE
decode.

    python benchmarks/default_model.py [--repeats 20]

The target is under 1 s per image on 2 CPU cores. Also prints the batched cost per
image.
"""

import argparse
import os
import platform
import statistics
import time

import torch

from minsd import load_pipeline


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    pipe = load_pipeline(device="cpu")
    prompt = "a blue circle on a white background"
    pipe(prompt, steps=20, progress=False)  # warm-up
    single = []
    for seed in range(args.repeats):
        start = time.perf_counter()
        pipe(prompt, steps=20, guidance=7.5, seed=seed, progress=False)
        single.append(time.perf_counter() - start)
    start = time.perf_counter()
    pipe([prompt] * 32, steps=20, guidance=7.5, progress=False)
    batched = (time.perf_counter() - start) / 32
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"one image (20 steps, guidance 7.5, decode): median {statistics.median(single):.3f} s, "
        f"min {min(single):.3f} s, max {max(single):.3f} s over {args.repeats}"
    )
    print(f"batch of 32: {batched:.3f} s per image")


if __name__ == "__main__":
    main()
