"""The book's live widgets in headless Chromium, opened from file:// and served over
http: the images the page computes with ONNX Runtime Web equal minsd's.

On the built book (the session fixture `built_book` of conftest.py), each test drives
a widget as a reader would (selects, sliders, mouse strokes on the drawing canvas, the
Run button), reads the result from the page, and compares it with the package:

- the full loop: the image against `pipe.generate(...)` with the same prompt, seed,
  steps, guidance, sampler and spacing (at most 2/255 per pixel), the schedule against
  `get_sigmas`, and D(x_i; sigma_i) decoded at a chosen step against `pipe.decode`;
- image to image: the image drawn by mouse, read back from the page, given to
  `pipe.generate(..., init_image=..., strength=...)`;
- the toy: the page's sampler paths against `minsd.toy.trajectory` with minsd's
  samplers, from the page's own starting points;
- a failed load (no WebAssembly, a missing file) shows one line in the widget and
  leaves the page's precomputed figures; nothing is fetched from outside the book.

Screenshots are kept in tests/output/live/ (not in git). For development,
MINSD_LIVE_BOOK=path/to/_build/html tests a book built elsewhere (any pages with the
widgets) instead of building the whole book.
"""

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import minsd
from minsd import toy
from minsd.loading import DEFAULT_MODEL, load_pipeline

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "tests" / "output" / "live"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
BOOK_ENV = "MINSD_LIVE_BOOK"
# The page's 8-bit pixels against minsd's float ones, in 1/255: the bound.
PIXEL_TOLERANCE = 2.0
# The decoder's float output on the page against minsd's, before rounding: below this,
# the page's 8-bit image is minsd's to within rounding, as chapter 7 says.
FLOAT_TOLERANCE = 1e-3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def book(request) -> Path:
    """The built book's html folder (or $MINSD_LIVE_BOOK's)."""
    if os.environ.get(BOOK_ENV):
        return Path(os.environ[BOOK_ENV])
    return request.getfixturevalue("built_book")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(request, book):
    """The book over http on 127.0.0.1 (conftest's `book_server`, or one for
    $MINSD_LIVE_BOOK)."""
    if not os.environ.get(BOOK_ENV):
        yield request.getfixturevalue("book_server")
        return
    handler = functools.partial(QuietHandler, directory=str(book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def pipe():
    """The default model on one thread: its operators are too small to share, and two
    threads beside a busy browser run many times slower (see
    minsd.pipeline.recommended_num_threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_pipeline(DEFAULT_MODEL, device="cpu", dtype=torch.float32)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail(
            "no Chromium: install it (apt-get install chromium), as .ci/setup does"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def page_with(book: Path, widget: str) -> str:
    """The book's page (relative path) that holds the widget."""
    for path in sorted(book.rglob("*.html")):
        if f'data-widget="{widget}"' in path.read_text():
            return path.relative_to(book).as_posix()
    raise AssertionError(f"no page of {book} has a {widget!r} widget")


@pytest.fixture(params=["file", "http"])
def open_page(request, book, server, browser, tmp_path):
    """open_page(widget, init_script=None, missing=None) -> (page, the widget's
    element): the page opened from disk or over http, with `missing` (a file of
    _live/) gone. Remote requests are refused and recorded."""
    pages, outside = [], []

    def open_(widget: str, init_script: str | None = None, missing: str | None = None):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        pages.append(page)
        if init_script:
            page.add_init_script(init_script)
        page.route(
            re.compile(r"^(https?|wss?)://(?!127\.0\.0\.1[:/]).*"),
            lambda route: (outside.append(route.request.url), route.abort()),
        )
        name = page_with(book, widget)
        if request.param == "http":
            if missing:
                page.route(f"**/_live/{missing}", lambda route: route.abort())
            page.goto(f"{server}/{name}", wait_until="load")
        else:
            folder = book if missing is None else book_without(book, missing, tmp_path)
            page.goto((folder / name).as_uri(), wait_until="load")
        # What the chapter's own page asks for (matplotlib's players link a font
        # stylesheet on a CDN) is not the widgets' doing: from here on, it is.
        outside.clear()
        return page, page.locator(f'.minsd-live[data-widget="{widget}"]').first

    open_.kind = request.param
    yield open_
    for page in pages:
        page.close()
    assert not outside, f"the widgets fetched from outside the book: {outside}"


def book_without(book: Path, missing: str, folder: Path) -> Path:
    """The book as symbolic links in folder, less _live/missing."""
    for entry in book.iterdir():
        if entry.name != "_live":
            (folder / entry.name).symlink_to(entry)
    (folder / "_live").mkdir()
    for entry in (book / "_live").iterdir():
        if entry.name != missing:
            (folder / "_live" / entry.name).symlink_to(entry)
    return folder


def set_range(root, label: str, value) -> None:
    """Drag a slider to a value, as a reader would: the input event fires."""
    slider = root.locator(f"label.minsd-control:has-text('{label}') input[type=range]")
    slider.evaluate(
        "(e, v) => { e.value = v; e.dispatchEvent(new Event('input', {bubbles: true})); }",
        str(value),
    )


def set_prompt(root, colour: str, shape: str, background: str) -> None:
    selects = root.locator(".minsd-prompt select")
    for k, value in enumerate((colour, shape, background)):
        selects.nth(k).select_option(value)


def set_choice(root, label: str, value: str) -> None:
    root.locator(f"label.minsd-control:has-text('{label}') select").select_option(value)


def wait_for_run(page, root, options: dict, timeout_s: float = 180) -> dict:
    """Wait until the widget has finished a run with these options; its result."""
    root.page.wait_for_function(
        """([root, expected]) => {
            if (root.dataset.state === "error") return true;
            const got = root.minsdResult?.options;
            return root.dataset.state === "done" && got !== undefined
                && Object.entries(expected).every(([k, v]) => got[k] === v);
        }""",
        arg=[root.element_handle(), options],
        timeout=timeout_s * 1000,
    )
    status = root.locator(".minsd-status").text_content()
    assert root.get_attribute("data-state") == "done", status
    return root.evaluate(
        "(root) => ({sigmas: root.minsdResult.sigmas, ms: root.minsdResult.ms,"
        " pixels: Array.from(root.minsdResult.pixels)})"
    )


def canvas_pixels(canvas) -> np.ndarray:
    """A canvas's pixels: (H, W, 3) uint8."""
    data, width, height = canvas.evaluate(
        "(c) => [Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data),"
        " c.width, c.height]"
    )
    return np.array(data, dtype=np.uint8).reshape(height, width, 4)[..., :3]


def max_pixel_difference(page_image: np.ndarray, pixels: torch.Tensor) -> float:
    """max |page - minsd| over the pixels, in 1/255; pixels: (3, H, W) in [0, 1]."""
    expected = pixels.permute(1, 2, 0).numpy() * 255
    return float(np.abs(page_image.astype(np.float64) - expected).max())


def max_float_difference(page_pixels: list, pixels: torch.Tensor) -> float:
    """max |page - minsd| of the decoder's float output, before 8-bit rounding."""
    return float(np.abs(np.array(page_pixels) - pixels.flatten().numpy()).max())


def screenshot(root, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    root.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


LOOP_RUNS = {
    "file": [
        dict(colour="yellow", shape="triangle", background="white", seed=3, steps=20,
             guidance=7.5, sampler="euler", spacing="linspace"),
        dict(colour="yellow", shape="triangle", background="white", seed=3, steps=12,
             guidance=5.0, sampler="dpmpp_2m", spacing="karras"),
    ],
    "http": [
        dict(colour="green", shape="square", background="black", seed=41, steps=9,
             guidance=4.0, sampler="heun", spacing="karras"),
        dict(colour="green", shape="square", background="black", seed=41, steps=30,
             guidance=1.0, sampler="euler", spacing="linspace"),
    ],
}  # fmt: skip


def test_loop_widget_draws_minsds_images(open_page, pipe):
    """Prompt, seed, N, g, sampler and spacing set on the page; Run; then a change of
    controls recomputes live. Each image equals pipe.generate's, the schedule
    get_sigmas', and the step slider's D(x_i; sigma_i) pipe.decode's."""
    page, root = open_page("loop")
    for k, run in enumerate(LOOP_RUNS[open_page.kind]):
        prompt = f"a {run['colour']} {run['shape']} on a {run['background']} background"
        set_prompt(root, run["colour"], run["shape"], run["background"])
        set_range(root, "seed", run["seed"])
        set_range(root, "steps N", run["steps"])
        set_range(root, "guidance g", run["guidance"])
        set_choice(root, "sampler", run["sampler"])
        set_choice(root, "spacing", run["spacing"])
        if k == 0:
            root.locator("button", has_text="Run").click()
        options = dict(
            prompt=prompt, seed=run["seed"], steps=run["steps"],
            guidance=run["guidance"], sampler=run["sampler"], spacing=run["spacing"],
        )  # fmt: skip
        got = wait_for_run(page, root, options)
        expected = pipe.generate(
            prompt, steps=run["steps"], guidance=run["guidance"], seed=run["seed"],
            sampler=run["sampler"], spacing=run["spacing"], return_steps=True,
            progress=False,
        )  # fmt: skip
        difference = max_pixel_difference(
            canvas_pixels(root.locator("canvas.minsd-result")), expected.pixels[0]
        )
        print(
            f"{open_page.kind}: loop {run}: max pixel difference page vs minsd "
            f"{difference:.3f}/255 (before rounding to 8 bits: "
            f"{max_float_difference(got['pixels'], expected.pixels[0]):.1e}; "
            f"{got['ms']:.0f} ms in the page)"
        )
        assert difference <= PIXEL_TOLERANCE
        assert max_float_difference(got["pixels"], expected.pixels[0]) < FLOAT_TOLERANCE
        sigmas = minsd.get_sigmas(
            pipe.denoiser.sigma_table, run["steps"], run["spacing"]
        )
        np.testing.assert_allclose(got["sigmas"], sigmas.numpy(), rtol=1e-12, atol=0)

        # The step slider: D(x_i; sigma_i) decoded at step i (the caption changes
        # once it is drawn).
        i = run["steps"] // 3
        set_range(root, "step i", i)
        page.wait_for_function(
            "(root) => root.querySelector('.minsd-caption').textContent"
            f".startsWith('step i = {i} ')",
            arg=root.element_handle(),
        )
        denoised = pipe.decode(expected.steps[i]["denoised"])[0]
        step_canvas = root.locator("canvas.minsd-pixels").nth(1)
        step_difference = max_pixel_difference(canvas_pixels(step_canvas), denoised)
        print(f"  D(x_{i}) decoded: max pixel difference {step_difference:.3f}/255")
        assert step_difference <= PIXEL_TOLERANCE
        screenshot(root, f"loop_{open_page.kind}_{k}")


IMG2IMG_RUNS = {
    "file": [dict(colour="blue", shape="square", background="black", strength=0.6,
                  steps=20, guidance=7.5, seed=0),
             dict(colour="blue", shape="square", background="black", strength=0.85,
                  steps=20, guidance=7.5, seed=0)],
    "http": [dict(colour="red", shape="triangle", background="white", strength=0.45,
                  steps=25, guidance=6.0, seed=5),
             dict(colour="red", shape="triangle", background="white", strength=1.0,
                  steps=25, guidance=6.0, seed=5)],
}  # fmt: skip


def draw_by_mouse(page, root, colour: str, brush: int) -> None:
    """Pick a colour and a brush, and draw a zigzag across the canvas."""
    root.locator(f"button.minsd-swatch[title='{colour}']").click()
    set_range(root, "brush", brush)
    box = root.locator("canvas.minsd-drawing").bounding_box()
    points = [(0.15, 0.2), (0.8, 0.3), (0.2, 0.6), (0.85, 0.85)]
    page.mouse.move(
        box["x"] + points[0][0] * box["width"], box["y"] + points[0][1] * box["height"]
    )
    page.mouse.down()
    for fx, fy in points[1:]:
        page.mouse.move(
            box["x"] + fx * box["width"], box["y"] + fy * box["height"], steps=8
        )
    page.mouse.up()


def test_img2img_widget_draws_minsds_images(open_page, pipe):
    """An image drawn with the mouse, a prompt and a strength; Run; then a drag of the
    strength recomputes. Each image equals pipe.generate's with the drawing (read back
    from the page) as init_image."""
    page, root = open_page("img2img")
    draw_by_mouse(page, root, "yellow", 4)
    for k, run in enumerate(IMG2IMG_RUNS[open_page.kind]):
        prompt = f"a {run['colour']} {run['shape']} on a {run['background']} background"
        set_prompt(root, run["colour"], run["shape"], run["background"])
        set_range(root, "strength λ", run["strength"])
        set_range(root, "steps N", run["steps"])
        set_range(root, "guidance g", run["guidance"])
        set_range(root, "seed", run["seed"])
        if k == 0:
            root.locator("button", has_text="Run").click()
        options = dict(
            prompt=prompt, seed=run["seed"], steps=run["steps"],
            guidance=run["guidance"], strength=run["strength"],
        )  # fmt: skip
        got = wait_for_run(page, root, options)
        drawing = canvas_pixels(root.locator("canvas.minsd-drawing"))
        assert (
            len(np.unique(drawing.reshape(-1, 3), axis=0)) > 2
        )  # the strokes are there
        expected = pipe.generate(
            prompt, init_image=Image.fromarray(drawing), strength=run["strength"],
            steps=run["steps"], guidance=run["guidance"], seed=run["seed"], progress=False,
        )  # fmt: skip
        difference = max_pixel_difference(
            canvas_pixels(root.locator("canvas.minsd-result")), expected.pixels[0]
        )
        print(
            f"{open_page.kind}: img2img {run}: max pixel difference page vs minsd "
            f"{difference:.3f}/255 (before rounding to 8 bits: "
            f"{max_float_difference(got['pixels'], expected.pixels[0]):.1e}; "
            f"{got['ms']:.0f} ms in the page)"
        )
        assert difference <= PIXEL_TOLERANCE
        assert max_float_difference(got["pixels"], expected.pixels[0]) < FLOAT_TOLERANCE
        np.testing.assert_allclose(got["sigmas"], expected.sigmas.numpy(), rtol=1e-12)
        screenshot(root, f"img2img_{open_page.kind}_{k}")


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_toy_widget_follows_minsds_samplers(open_page, sampler):
    """The toy's paths for N steps, and its 200-step Heun reference, are minsd's
    samplers on minsd.toy's exact mixture denoiser, from the page's starting points."""
    page, root = open_page("toy")
    samplers = {"euler": minsd.sample_euler, "heun": minsd.sample_heun}
    for n_steps, seed in ((7, 0), (23, 12)):
        set_range(root, "points", seed)
        set_choice(root, "sampler", sampler)
        set_range(root, "steps N", n_steps)
        set_range(root, "σ", -0.5)
        page.wait_for_function(
            "([root, n, s]) => root.minsdResult?.n_steps === n && root.minsdResult.sampler"
            " === s && root.dataset.state === 'done'",
            arg=[root.element_handle(), n_steps, sampler],
        )
        result = root.evaluate(
            "(root) => ({x_start: Array.from(root.minsdResult.x_start), path: "
            "root.minsdResult.path.map((a) => Array.from(a)), reference: "
            "root.minsdResult.reference.map((a) => Array.from(a)), sigmas: root.minsdResult.sigmas})"
        )
        x_start = torch.tensor(result["x_start"], dtype=torch.float32).reshape(-1, 2)
        mixture = toy.example_mixture()
        sigmas = minsd.karras_sigmas(n_steps + 1, sigma_min=0.0, sigma_max=20.0)
        np.testing.assert_allclose(result["sigmas"], sigmas.numpy(), rtol=1e-12)
        path = toy.trajectory(samplers[sampler], mixture, x_start, sigmas)
        page_path = np.array(result["path"]).reshape(n_steps + 1, -1, 2)
        error = np.abs(page_path - path.numpy()).max()
        reference = toy.trajectory(
            minsd.sample_heun, mixture, x_start, minsd.karras_sigmas(201, 0.0, 20.0)
        )
        reference_error = np.abs(
            np.array(result["reference"]).reshape(201, -1, 2) - reference.numpy()
        ).max()
        print(
            f"{open_page.kind}: toy, {sampler}, N = {n_steps}: max |page - minsd| "
            f"{error:.2g}, reference {reference_error:.2g}"
        )
        # float32 states of size up to ~3 sigma_max = 60: rounding of 60 * 2^-24 a step
        assert error < 1e-4 and reference_error < 1e-4
    screenshot(root, f"toy_{open_page.kind}_{sampler}")


@pytest.mark.parametrize(
    "failure, init_script, missing, message",
    [
        ("no WebAssembly", "delete globalThis.WebAssembly;", None, "cannot run WebAssembly"),
        ("a missing file", None, "unet.onnx.js", "could not load"),
    ],
)  # fmt: skip
def test_a_failed_load_says_so_in_one_line(
    open_page, failure, init_script, missing, message
):
    """The widget shows one line naming the problem and keeps the page's precomputed
    figures and players."""
    page, root = open_page("loop", init_script, missing)
    figures_before = page.locator("main img, div.animation").count()
    assert figures_before > 0
    root.locator("button", has_text="Run").click()
    page.wait_for_function(
        "(root) => root.dataset.state === 'error'", arg=root.element_handle()
    )
    status = root.locator(".minsd-status")
    print(f"{open_page.kind}: {failure}: {status.text_content()!r}")
    assert message in status.text_content()
    assert "minsd-error" in status.get_attribute("class")
    assert len(status.text_content().splitlines()) == 1
    assert page.locator("main img, div.animation").count() == figures_before
    screenshot(root, f"failed_load_{open_page.kind}_{missing or 'wasm'}")


@pytest.mark.parametrize("widget", ["loop", "img2img", "toy"])
def test_every_control_is_bounded(open_page, widget):
    """Widgets offer sliders with a minimum and a maximum, menus and buttons: no field
    takes a number or a text the model cannot use."""
    page, root = open_page(widget)
    controls = root.evaluate(
        """(root) => Array.from(root.querySelectorAll("input, select, textarea"),
            (e) => [e.tagName, e.type, e.min, e.max, e.tagName === "SELECT" ? e.options.length : 0])"""
    )
    assert controls
    for tag, kind, low, high, options in controls:
        if tag == "SELECT":
            assert options >= 1
        else:
            assert (tag, kind) == ("INPUT", "range") and low != "" and high != ""


def test_with_other_weights_the_widgets_say_they_run_the_default_model(
    book, server, browser, monkeypatch
):
    """With $MINSD_WEIGHTS set, the book build tells the widgets, and each says that
    it runs the default model (SD 1.5 is too large for a page)."""
    monkeypatch.syspath_prepend(str(ROOT / "book" / "_ext"))
    import minsd_live

    from minsd import live
    from minsd.loading import WEIGHTS_ENV

    monkeypatch.setenv(WEIGHTS_ENV, "/models/sd15")
    settings = minsd_live.page_settings(live, book / "_live")
    assert settings["other_weights"] == "/models/sd15"
    # The page as that build would write it.
    name = page_with(book, "loop")
    text = (book / name).read_text()
    assert '"other_weights": null' in text
    text = text.replace('"other_weights": null', '"other_weights": "/models/sd15"')
    page = browser.new_page()
    page.route(
        f"{server}/{name}",
        lambda route: route.fulfill(body=text, content_type="text/html"),
    )
    page.goto(f"{server}/{name}")
    note = page.locator('.minsd-live[data-widget="loop"] .minsd-note').text_content()
    page.close()
    print(f"the widget's note: {note!r}")
    assert "drawn with /models/sd15" in note and "default model" in note


def test_the_export_refuses_a_network_that_differs_from_pytorch(tmp_path, monkeypatch):
    """The parity check has teeth: with a tolerance below float32 rounding, the export
    (and so the book build) stops at the first network and names it."""
    from minsd import live

    monkeypatch.setattr(live, "PARITY_TOLERANCE", 1e-12)
    with pytest.raises(live.ParityError, match=r"unet\.onnx: onnxruntime differs"):
        live.export(tmp_path, num_seeds=1)
    assert not list(tmp_path.glob("*.onnx.js"))  # nothing written for the page
