"""Bad arguments to `generate` and to the command line: a clear error before any work,
nothing written.

Each row is one bad input, the exception (API) or exit status (CLI) it must give, and
words the message must contain: what was wrong and what is allowed. Bad weight folders
and files are in test_bad_weights.py.
"""

import math
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from PIL import Image

from minsd.loading import load_pipeline

# -- the API: StableDiffusion.generate on the default model ---------------------------------------

GOOD = {"prompt": "a red circle on a black background", "steps": 2}
IMAGE = Image.new("RGB", (32, 32), "red")  # the default model's size

GENERATE_CASES = [
    # (name, arguments that replace GOOD's, exception, words in the message)
    (
        "prompt None",
        {"prompt": None},
        TypeError,
        "prompt must be a string or a non-empty list",
    ),
    (
        "prompt empty list",
        {"prompt": []},
        TypeError,
        "prompt must be a string or a non-empty list",
    ),
    (
        "prompt list with a number",
        {"prompt": ["a circle", 3]},
        TypeError,
        "non-empty list of strings",
    ),
    (
        "negative prompt a number",
        {"negative_prompt": 5},
        TypeError,
        "negative_prompt must be None, a string",
    ),
    (
        "negative prompts too many",
        {"negative_prompt": ["a", "b"]},
        ValueError,
        "2 negative prompts for 1 prompts",
    ),
    (
        "height not a multiple",
        {"height": 30},
        ValueError,
        "height must be a positive multiple of 4 (the VAE's",
    ),
    ("height suggestion", {"height": 30}, ValueError, "got 30; try 28 or 32"),
    ("width zero", {"width": 0}, ValueError, "width must be a positive multiple of 4"),
    (
        "width negative",
        {"width": -32},
        ValueError,
        "width must be a positive multiple of 4",
    ),
    (
        "height a string",
        {"height": "32"},
        TypeError,
        "height must be an integer number of pixels, got str",
    ),
    (
        "height a float",
        {"height": 32.0},
        TypeError,
        "height must be an integer number of pixels, got float",
    ),
    (
        "steps zero",
        {"steps": 0},
        ValueError,
        "steps must be a positive integer, got int: 0",
    ),
    (
        "steps a float",
        {"steps": 2.5},
        ValueError,
        "steps must be a positive integer, got float",
    ),
    (
        "steps True",
        {"steps": True},
        ValueError,
        "steps must be a positive integer, got bool",
    ),
    (
        "leading beyond M",
        {"steps": 1001, "spacing": "leading"},
        ValueError,
        "at most 1000 steps, got 1001",
    ),
    (
        "trailing beyond M",
        {"steps": 1500, "spacing": "trailing"},
        ValueError,
        "at most 1000 steps, got 1500",
    ),
    (
        "leading at M",
        {"steps": 1000, "spacing": "leading"},
        ValueError,
        "would start at t = 1000, past the last",
    ),
    (
        "guidance a string",
        {"guidance": "7.5"},
        TypeError,
        "guidance must be a number (e.g. 7.5), got str",
    ),
    ("guidance None", {"guidance": None}, TypeError, "guidance must be a number"),
    (
        "guidance NaN",
        {"guidance": math.nan},
        ValueError,
        "guidance must be a finite number",
    ),
    (
        "guidance infinite",
        {"guidance": math.inf},
        ValueError,
        "guidance must be a finite number",
    ),
    (
        "seed 2**64",
        {"seed": 2**64},
        ValueError,
        "seed must be an integer in [0, 2**64)",
    ),
    (
        "seed negative",
        {"seed": -1},
        ValueError,
        "seed must be an integer in [0, 2**64)",
    ),
    (
        "seed a float",
        {"seed": 1.5},
        ValueError,
        "seed must be an integer in [0, 2**64)",
    ),
    (
        "num_images zero",
        {"num_images": 0},
        ValueError,
        "num_images must be a positive integer",
    ),
    (
        "num_images a string",
        {"num_images": "2"},
        ValueError,
        "num_images must be a positive integer",
    ),
    (
        "unknown spacing",
        {"spacing": "cosine"},
        ValueError,
        "unknown spacing 'cosine'; expected one of linspace",
    ),
    (
        "unknown sampler",
        {"sampler": "ddim"},
        ValueError,
        "unknown sampler 'ddim'; expected one of euler",
    ),
    # img2img
    (
        "strength without image",
        {"strength": 0.5},
        ValueError,
        "strength=0.5 needs an init_image",
    ),
    (
        "strength zero",
        {"init_image": IMAGE, "strength": 0.0},
        ValueError,
        "strength must be in (0, 1]",
    ),
    (
        "strength above one",
        {"init_image": IMAGE, "strength": 1.5},
        ValueError,
        "strength must be in (0, 1]",
    ),
    (
        "strength NaN",
        {"init_image": IMAGE, "strength": math.nan},
        ValueError,
        "strength must be in (0, 1]",
    ),
    (
        "strength a string",
        {"init_image": IMAGE, "strength": "0.5"},
        TypeError,
        "strength must be a number",
    ),
    (
        "strength runs no step",
        {"init_image": IMAGE, "strength": 0.3},
        ValueError,
        "runs int(2 * 0.3) = 0 steps",
    ),
    (
        "image a path",
        {"init_image": "circle.png"},
        TypeError,
        "init_image must be a PIL image or a (B, 3, H, W)",
    ),
    (
        "image 4 channels",
        {"init_image": torch.rand(1, 4, 32, 32)},
        ValueError,
        "init_image must have shape",
    ),
    (
        "images for 2 prompts",
        {"init_image": torch.rand(2, 3, 32, 32)},
        ValueError,
        "(1 or 1, 3, H, W)",
    ),
    (
        "image out of range",
        {"init_image": torch.rand(1, 3, 32, 32) * 255},
        ValueError,
        "in [0, 1], got values",
    ),
    (
        "image NaN",
        {"init_image": torch.full((1, 3, 32, 32), math.nan)},
        ValueError,
        "must be finite and in [0, 1]",
    ),
    (
        "image size not asked",
        {"init_image": IMAGE, "height": 64},
        ValueError,
        "init_image is 32 x 32 pixels",
    ),
    (
        "image size not a multiple",
        {"init_image": Image.new("RGB", (30, 32))},
        ValueError,
        "width must be a",
    ),
]


@pytest.fixture(scope="module")
def counted_pipe():
    """The default model with a counter on its text encoder and UNet: a refused call
    must not reach them."""
    pipe = load_pipeline(device="cpu")
    calls = {"text_encoder": 0, "unet": 0}

    def counter(name: str):
        def hook(module: torch.nn.Module, args: tuple) -> None:
            calls[name] += 1

        return hook

    pipe.text_encoder.register_forward_pre_hook(counter("text_encoder"))
    pipe.unet.register_forward_pre_hook(counter("unet"))
    return pipe, calls


def test_good_arguments_reach_the_networks(counted_pipe):
    """The counters of the table below count: the good arguments run the text encoder
    and the UNet."""
    pipe, calls = counted_pipe
    before = dict(calls)
    pipe.generate(**GOOD, progress=False)
    assert (
        calls["text_encoder"] > before["text_encoder"]
        and calls["unet"] > before["unet"]
    )


@pytest.mark.parametrize(
    ("name", "arguments", "error", "words"),
    GENERATE_CASES,
    ids=[c[0] for c in GENERATE_CASES],
)
def test_generate_refuses_before_any_work(counted_pipe, name, arguments, error, words):
    pipe, calls = counted_pipe
    before = dict(calls)
    with pytest.raises(error) as caught:
        pipe.generate(**{**GOOD, **arguments}, progress=False)
    assert words in str(caught.value)
    assert calls == before, f"{name}: the networks ran before the error"


LOAD_CASES = [
    ("device not available", {"device": "cuda:7"}, ValueError, "is not available"),
    (
        "device nonsense",
        {"device": "gpu please"},
        ValueError,
        "is not a device; expected 'cpu', 'cuda'",
    ),
    ("device a number", {"device": 3}, TypeError, "device must be None, a string"),
    (
        "dtype a string",
        {"dtype": "float16"},
        TypeError,
        "dtype must be None or a floating-point torch.dtype",
    ),
    (
        "dtype an integer type",
        {"dtype": torch.int8},
        TypeError,
        "floating-point torch.dtype",
    ),
]


@pytest.mark.parametrize(
    ("name", "arguments", "error", "words"), LOAD_CASES, ids=[c[0] for c in LOAD_CASES]
)
def test_load_pipeline_refuses_bad_device_and_dtype(name, arguments, error, words):
    with pytest.raises(error) as caught:
        load_pipeline(**arguments)
    assert words in str(caught.value)


# -- the command line: each case in its own process ------------------------------------------------


def listing(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b""
        for p in sorted(folder.rglob("*"))
    }


CIRCLE = "a red circle on a black background"
CLI_CASES = [
    # (name, arguments, words in the error line); every case must exit with status 2
    (
        "steps zero",
        ["--steps", "0"],
        "argument --steps: must be a positive integer, got '0'",
    ),
    (
        "steps not a number",
        ["--steps", "many"],
        "argument --steps: must be a positive integer, got 'many'",
    ),
    (
        "num-images zero",
        ["--num-images", "0"],
        "argument --num-images: must be a positive integer",
    ),
    (
        "threads zero",
        ["--threads", "0"],
        "argument --threads: must be a positive integer",
    ),
    (
        "guidance not a number",
        ["--guidance", "lots"],
        "argument --guidance: invalid float value: 'lots'",
    ),
    (
        "unknown sampler",
        ["--sampler", "ddim"],
        "argument --sampler: invalid choice: 'ddim'",
    ),
    (
        "unknown spacing",
        ["--spacing", "cosine"],
        "argument --spacing: invalid choice: 'cosine'",
    ),
    ("unknown option", ["--stpes", "3"], "unrecognized arguments: --stpes"),
    ("no prompt", [], "the following arguments are required: prompt"),
    ("guidance NaN", ["--guidance", "nan"], "guidance must be a finite number"),
    ("seed too large", ["--seed", str(2**64)], "seed must be an integer in [0, 2**64)"),
    (
        "height not a multiple",
        ["--height", "30"],
        "height must be a positive multiple of 4",
    ),
    (
        "leading beyond M",
        ["--steps", "1001", "--spacing", "leading"],
        "at most 1000 steps, got 1001",
    ),
    (
        "out unknown extension",
        ["--out", "image.xyz"],
        "cannot write images with extension '.xyz'",
    ),
    (
        "out without extension",
        ["--out", "image"],
        "cannot write images with extension '(none)'",
    ),
    (
        "out is a folder",
        ["--out", "existing_folder"],
        "existing_folder is a folder; give a file name",
    ),
    (
        "out under a file",
        ["--out", "existing.png/new.png"],
        "cannot create files under",
    ),
    (
        "out of several is a folder",
        ["--num-images", "2", "--out", "pair.png"],
        "pair_1.png is a folder",
    ),
    ("device not there", ["--device", "cuda"], "device 'cuda' is not available"),
    ("weights missing", ["--weights", "./no_such_folder"], "no_such_folder"),
    ("weights a pickle", ["--weights", "model.ckpt"], "model.ckpt"),
    (
        "init image missing",
        ["--init-image", "nope.png"],
        "--init-image nope.png: no such file",
    ),
    (
        "init image not an image",
        ["--init-image", "model.ckpt"],
        "--init-image model.ckpt: not an image Pillow",
    ),
    (
        "strength without image",
        ["--strength", "0.5"],
        "strength=0.5 needs an init_image",
    ),
    (
        "strength above one",
        ["--init-image", "circle.png", "--strength", "2"],
        "strength must be in (0, 1]",
    ),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working folder holding what the cases point at: a folder, an image, a pickled
    checkpoint."""
    (tmp_path / "existing_folder").mkdir()
    (tmp_path / "pair_1.png").mkdir()
    (tmp_path / "existing.png").write_bytes(b"an earlier image")
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x04 not really a pickle")
    Image.new("RGB", (32, 32), "red").save(tmp_path / "circle.png")
    return tmp_path


@pytest.mark.parametrize(
    ("name", "arguments", "words"), CLI_CASES, ids=[c[0] for c in CLI_CASES]
)
def test_cli_user_error_is_one_line_and_exit_2(workdir, name, arguments, words):
    """Exit status 2, the error on one line (and at most one more pointing at --help),
    no traceback, no file created, changed or removed."""
    before = listing(workdir)
    args = [CIRCLE, *arguments] if name != "no prompt" else arguments
    result = run_cli(*args, cwd=workdir)
    assert result.returncode == 2, result.stderr
    errors = [
        line for line in result.stderr.splitlines() if line.startswith("minsd: error:")
    ]
    assert len(errors) == 1 and words in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    others = [
        line for line in result.stderr.splitlines() if not line.startswith("minsd: ")
    ]
    assert others in ([], ["(python -m minsd --help lists the options)"]), result.stderr
    assert listing(workdir) == before


def test_cli_failed_run_keeps_an_existing_image_and_creates_no_folder(workdir):
    """A run that fails after loading (a refused height) leaves the old --out and
    creates no folders."""
    old = workdir / "existing.png"
    result = run_cli(CIRCLE, "--height", "30", "--out", "existing.png", cwd=workdir)
    assert result.returncode == 2 and old.read_bytes() == b"an earlier image"
    result = run_cli(
        CIRCLE, "--height", "30", "--out", "new/deeper/image.png", cwd=workdir
    )
    assert result.returncode == 2 and not (workdir / "new").exists()
