"""The command line, run as a user runs it (its refusals of bad input:
test_bad_inputs.py)."""

import os
import select
import signal
import stat
import subprocess
import sys
import time

import pytest
from conftest import cli_env, run_cli
from PIL import Image, ImageDraw


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


def test_cli_missing_weights_says_how_to_get_them(tmp_path):
    """A missing weights folder is exit status 2 and says how to get weights."""
    result = run_cli(
        "a red circle",
        "--weights",
        str(tmp_path / "missing"),
        "--out",
        str(tmp_path / "x.png"),
    )
    assert result.returncode == 2
    assert "missing': no such file or folder" in result.stderr
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in result.stderr


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


def test_help_imports_no_torch():
    """`python -m minsd --help` answers without importing torch: no torch module in
    the fresh process's import log (-X importtime)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "minsd", "--help"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert result.returncode == 0 and "usage: python -m minsd" in result.stdout
    # one line per import: "import time: self [us] | cumulative | module", the module
    # indented by its depth
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "minsd.choices" in imported  # the log holds what __main__ imports
    assert not [name for name in imported if name.split(".")[0] == "torch"]


def read_until(stream, marker: bytes, deadline: float) -> bytes:
    """What a pipe gives until `marker` appears, it closes or time.monotonic() passes
    `deadline`: a read that cannot hang."""
    seen = b""
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            break
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:  # the process closed it: it has ended
            break
        seen += chunk
    return seen


def test_cli_ctrl_c_exits_130_without_traceback_or_file(tmp_path):
    """SIGINT during sampling: exit status 130, one line, no traceback, the old image
    untouched.

    The child restores SIGINT's default action: a test run that was started with
    SIGINT ignored (a background job of a non-interactive shell, nohup, some CI
    runners) hands that on to its children, which would then sample all 100,000
    steps. And no read waits without a deadline, so that a failure is quick.
    """
    old = tmp_path / "existing.png"
    old.write_bytes(b"an earlier image")
    command = [sys.executable, "-m", "minsd", "a red circle on a black background"]
    command += ["--steps", "100000", "--out", old.name]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=cli_env(),
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # wait until it samples (the progress bar starts)
        seen = read_until(process.stderr, b"Euler:", time.monotonic() + 120)
        assert b"Euler:" in seen, seen.decode()
        process.send_signal(signal.SIGINT)
        seen += process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    stderr = seen.decode()
    assert process.returncode == 130, stderr
    assert "minsd: interrupted; no image written" in stderr
    assert "Traceback" not in stderr
    assert old.read_bytes() == b"an earlier image"
    assert not list(tmp_path.glob(".existing.png*"))


def test_cli_images_get_the_users_umask(tmp_path):
    """The images are new files of the user's: mode 0666 less the umask (not the 0600
    of the temporary file they are written through); -o is --out."""
    out = tmp_path / "circle.png"
    result = subprocess.run(
        [sys.executable, "-m", "minsd", "a red circle", "--steps", "2", "-o", str(out)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
        preexec_fn=lambda: os.umask(0o027),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(out)]
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    "error", ["TypeError", "ValueError", "OSError", "FloatingPointError"]
)
def test_cli_shows_the_traceback_of_a_bug(tmp_path, error):
    """Only minsd's refusals (MinsdError) are one-line errors: an exception raised
    anywhere else, here injected into load_pipeline, is a bug and keeps its
    traceback (Python's exit status 1)."""
    program = (
        "import sys, minsd.loading\n"
        "def load_pipeline(*args, **kwargs):\n"
        f"    raise {error}('an injected bug')\n"
        "minsd.loading.load_pipeline = load_pipeline\n"
        "from minsd.__main__ import main\n"
        "sys.exit(main(['a red circle', '--out', 'x.png']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert f"{error}: an injected bug" in result.stderr
    assert "minsd: error:" not in result.stderr
