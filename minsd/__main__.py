"""Command line: python -m minsd "a prompt" --steps 20 --out image.png

A user's mistake (a bad option, an --out that cannot be written, weights that do not
load, an argument the pipeline refuses: a MinsdError) is one or two lines on stderr and
exit status 2; Ctrl-C is exit status 130. In both cases no file is written and an
existing file at --out is left as it was. Any other error is a bug in minsd, and
keeps its traceback.
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

# torch-free: --help answers without importing torch
from .choices import SAMPLERS, SPACINGS, WEIGHTS_ENV
from .errors import InvalidValue, MinsdError, MissingFile

if TYPE_CHECKING:
    from PIL import Image


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        """One line for the mistake and one for where to look (not the usage block)."""
        self.exit(
            2, f"minsd: error: {message}\n(python -m minsd --help lists the options)\n"
        )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m minsd", description="Text to image with minsd's samplers."
    )
    parser.add_argument("prompt", help="what to draw")
    parser.add_argument(
        "--negative", default=None, help="what to steer away from (negative prompt)"
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=20,
        help="sampling steps (default 20; Euler: one UNet evaluation each)",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=7.5,
        help="classifier-free guidance scale (default 7.5)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the initial noise, 0 <= seed < 2**64 (default 0)",
    )
    parser.add_argument(
        "--height",
        type=int,
        default=None,
        help="pixels, a multiple of 8 (default: the model's)",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help="pixels, a multiple of 8 (default: the model's)",
    )
    parser.add_argument(
        "--num-images",
        type=positive_int,
        default=1,
        help="images for the prompt (default 1)",
    )
    parser.add_argument(
        "--spacing",
        choices=SPACINGS,
        default="linspace",
        help="noise schedule (default linspace)",
    )
    parser.add_argument(
        "--sampler", choices=SAMPLERS, default="euler", help="solver (default euler)"
    )
    parser.add_argument(
        "--init-image",
        type=Path,
        default=None,
        help="img2img: start from this image's latents",
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=None,
        help="img2img: how much to change the image, in (0, 1]; runs the last "
        "strength x steps steps (default 0.8)",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="SD 1.5 folder or single .safetensors checkpoint "
        f"(default: ${WEIGHTS_ENV}, else the built-in shapes model)",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="with a single .safetensors checkpoint: a diffusers-format folder with "
        "its configs (default: SD 1.5's)",
    )
    parser.add_argument(
        "--device", default=None, help="cuda or cpu (default: cuda when present)"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads (default: 1 for small models such as the built-in one, "
        "else torch's default)",
    )
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("image.png"),
        help="output image; several get _0, _1, ...",
    )
    return parser.parse_args(argv)


def output_paths(out: Path, num_images: int) -> list[Path]:
    """Where the images go: --out, or --out with _0, _1, ... before its suffix."""
    if num_images == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(num_images)]


def check_writable(paths: list[Path]) -> None:
    """Refuse, before any work, an output that cannot be written.

    That is an unknown image format, a path that is a folder, or a folder that cannot
    be created or written to.
    """
    from PIL import Image

    Image.init()  # registers every format PIL has a plugin for
    writable = sorted(ext for ext, fmt in Image.EXTENSION.items() if fmt in Image.SAVE)
    for path in paths:
        if path.is_dir():
            raise InvalidValue(
                f"--out {path} is a folder; give a file name such as "
                f"{path / 'image.png'}"
            )
        if path.suffix.lower() not in writable:
            raise InvalidValue(
                f"--out {path}: cannot write images with extension "
                f"{path.suffix or '(none)'!r}; use .png (lossless), .jpg, .webp or "
                "another extension that Pillow writes"
            )
        folder = path.parent
        # the nearest folder that exists must be a writable folder
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise InvalidValue(f"--out {path}: cannot create files under {folder}")


def read_image(path: Path) -> "Image.Image":
    """The --init-image, decoded now: an unreadable file is refused before loading."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as err:
        raise MissingFile(f"--init-image {path}: no such file") from err
    except (UnidentifiedImageError, OSError) as err:
        raise InvalidValue(
            f"--init-image {path}: not an image Pillow can read ({err})"
        ) from err


def save_images(images: list, paths: list[Path]) -> None:
    """Write each image to a temporary file beside its path, then rename it into place.

    An interrupted or failed save leaves neither a partial file nor a changed existing
    one, and no folder it created.
    """
    # the folders that will be created
    missing = [p for p in reversed(paths[0].parents) if not p.exists()]
    # mkstemp creates its files for the user alone (0600); the images get the
    # permissions of any new file of the user's: 0666 less the umask
    umask = os.umask(0)
    os.umask(umask)
    temporary = []
    try:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        for image, path in zip(images, paths):
            handle, name = tempfile.mkstemp(
                prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent
            )
            os.close(handle)
            temporary.append(Path(name))
            image.save(name)
            os.chmod(name, 0o666 & ~umask)
        for name, path in zip(temporary, paths):
            os.replace(name, path)
    except BaseException:
        for name in temporary:
            name.unlink(missing_ok=True)
        for folder in reversed(missing):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def run(args: argparse.Namespace) -> int:
    paths = output_paths(args.out, args.num_images)
    # before loading anything: a bad --out should not cost a generation
    check_writable(paths)
    init_image = None if args.init_image is None else read_image(args.init_image)

    import torch  # after parsing: --help should not wait for torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from .loading import load_pipeline

    # The command's own output only: not the libraries' "Loading weights" bars, nor
    # their load reports (every problem a report names, minsd refuses with an error).
    for library in (transformers_logging, diffusers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()
    pipe = load_pipeline(args.weights, device=args.device, config=args.config)
    # The command owns its process, so it may set the thread count: the one this
    # model samples fastest with.
    threads = args.threads or pipe.recommended_num_threads
    torch.set_num_threads(threads)
    dtype = str(pipe.dtype).removeprefix("torch.")
    threads_text = f"{threads} CPU thread{'s' if threads > 1 else ''}"
    print(
        f"minsd: {pipe.name} on {pipe.device} ({dtype}, {threads_text})",
        file=sys.stderr,
    )
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
        init_image=init_image,
        strength=args.strength,
    )
    seconds = time.perf_counter() - start
    save_images(result.images, paths)
    print("\n".join(str(p) for p in paths))
    print(f"minsd: {len(paths)} image(s) in {seconds:.1f} s", file=sys.stderr)
    return 0


def show_warning(
    message: Warning | str, category: type[Warning], *args: object, **kwargs: object
) -> None:
    print(f"minsd: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    # The command owns its process: warnings read as the command's own lines, not
    # as source locations.
    warnings.showwarning = show_warning
    try:
        return run(parse_args(argv))
    except MinsdError as err:  # a refusal; anything else is a bug, with its traceback
        print(f"minsd: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minsd: interrupted; no image written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
