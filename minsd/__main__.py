"""Command line: python -m minsd "a prompt" --steps 20 --seed 0 --guidance 7.5 --out image.png"""

import argparse
import sys
import time
from pathlib import Path

from .choices import SAMPLERS, SPACINGS  # torch-free: --help answers without importing torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m minsd", description="Text to image with minsd's samplers.")
    parser.add_argument("prompt", help="what to draw")
    parser.add_argument("--negative", default=None, help="what to steer away from (negative prompt)")
    parser.add_argument(
        "--steps", type=int, default=20, help="sampling steps (default 20; Euler: one UNet evaluation each)"
    )
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
    parser.add_argument("--height", type=int, default=None, help="pixels, a multiple of 8 (default: the model's)")
    parser.add_argument("--width", type=int, default=None, help="pixels, a multiple of 8 (default: the model's)")
    parser.add_argument("--num-images", type=int, default=1, help="images for the prompt (default 1)")
    parser.add_argument("--spacing", choices=SPACINGS, default="linspace", help="noise schedule (default linspace)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="euler", help="solver (default euler)")
    parser.add_argument(
        "--weights",
        default=None,
        help="SD 1.5 folder or hub id (default: $MINSD_WEIGHTS, else the built-in shapes model)",
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: 1 for small models such as the built-in one, else torch's default)",
    )
    parser.add_argument("--out", type=Path, default=Path("image.png"), help="output PNG; several images get _0, _1")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None and args.threads < 1:
        print(f"minsd: error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 2
    import torch  # after parsing: --help should not wait for torch

    from .loading import load_pipeline

    try:
        pipe = load_pipeline(args.weights, device=args.device)
        # The command owns its process, so it may set the thread count: the one this model samples fastest with.
        threads = args.threads or pipe.recommended_num_threads
        torch.set_num_threads(threads)
        dtype = str(pipe.dtype).removeprefix("torch.")
        threads_text = f"{threads} CPU thread{'s' if threads > 1 else ''}"
        print(f"minsd: {pipe.name} on {pipe.device} ({dtype}, {threads_text})", file=sys.stderr)
        start = time.perf_counter()
        result = pipe.generate(
            args.prompt,
            args.negative,
            height=args.height,
            width=args.width,
            steps=args.steps,
            guidance=args.guidance,
            seed=args.seed,
            num_images=args.num_images,
            spacing=args.spacing,
            sampler=args.sampler,
        )
    except (FileNotFoundError, NotADirectoryError, ValueError, TypeError, FloatingPointError) as err:
        print(f"minsd: error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    paths = [args.out]
    if len(result.images) > 1:
        paths = [args.out.with_name(f"{args.out.stem}_{i}{args.out.suffix}") for i in range(len(result.images))]
    for image, path in zip(result.images, paths):
        image.save(path)
        print(path)
    print(f"minsd: {len(paths)} image(s) in {seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
