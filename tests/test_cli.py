"""The command line, run as a user runs it (its refusals of bad input:
test_bad_inputs.py)."""

import os
import subprocess
import sys

from PIL import Image, ImageDraw


def run_cli(*args, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "minsd", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_writes_images(tiny_folder, tmp_path):
    """`python -m minsd` writes one PNG per image at the asked size, and says what it
    runs on."""
    out = tmp_path / "out" / "cat.png"
    result = run_cli(
        "a red circle",
        "--steps",
        "3",
        "--seed",
        "1",
        "--guidance",
        "5",
        "--height",
        "32",
        "--width",
        "48",
        "--num-images",
        "2",
        "--negative",
        "blue",
        "--weights",
        str(tiny_folder),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    paths = [tmp_path / "out" / "cat_0.png", tmp_path / "out" / "cat_1.png"]
    assert result.stdout.split() == [str(p) for p in paths]
    assert all(Image.open(p).size == (48, 32) for p in paths)
    assert f"minsd: {tiny_folder} on cpu (float32, 1 CPU thread)" in result.stderr
    assert "Euler: 100%" in result.stderr  # the progress bar


def test_cli_without_weights_offline_says_how_to_get_them(tmp_path):
    """A missing weights folder, offline, is exit status 2 and says why it could not be
    loaded."""
    result = run_cli(
        "a red circle",
        "--weights",
        str(tmp_path / "missing"),
        "--out",
        str(tmp_path / "x.png"),
    )
    assert result.returncode == 2
    assert "is not a local folder, and it could not be downloaded" in result.stderr


def test_cli_chooses_threads_for_the_model(tmp_path):
    """The small default model samples on one thread (see recommended_num_threads);
    --threads overrides."""
    out = str(tmp_path / "circle.png")
    chosen = run_cli("a red circle on a black background", "--steps", "2", "--out", out)
    assert "1 CPU thread)" in chosen.stderr, chosen.stderr
    forced = run_cli(
        "a red circle on a black background",
        "--steps",
        "2",
        "--threads",
        "2",
        "--out",
        out,
    )
    assert "2 CPU threads)" in forced.stderr, forced.stderr


def test_cli_img2img_writes_an_image_of_the_inputs_size(tmp_path):
    """--init-image and --strength: the default model turns a red circle into the
    prompt's image, same size."""
    drawing = tmp_path / "circle.png"
    image = Image.new("RGB", (32, 32), "black")
    ImageDraw.Draw(image).ellipse((6, 6, 26, 26), fill="red")
    image.save(drawing)
    out = tmp_path / "square.png"
    result = run_cli(
        "a blue square on a black background",
        "--init-image",
        str(drawing),
        "--strength",
        "0.5",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(out)]
    assert Image.open(out).size == (32, 32)
    # int(20 * 0.5) steps run
    assert "Euler: 100%" in result.stderr and "10/10" in result.stderr
