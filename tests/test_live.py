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
- the toy: the page's sampler paths and mean error against minsd's samplers on
  minsd.toy, from chapter 2's starting points;
- the comparison of chapter 9: each column's image against `generate`'s, its NFE
  against minsd's count and its latent distance against minsd's to the same 100-step
  reference, also with "equal cost" on;
- chapter 11's attention maps: every step's and level's maps of a prompt recorded in
  the page against `minsd.attention_maps` (same prompt, seed and steps) to 1e-4;
- each widget opens on minsd's result for its opening controls, before any Run, and the
  page computes the same picture when run; each "try this" line's claim, and each card's
  of the guided tours (chapters 7 and 10), holds for what the widget draws; the
  schedules of the page equal `get_sigmas` for every spacing and N = 1..100; a chapter's
  fallback paragraph gives way to the widget; on a phone the widgets fit the column,
  with controls a finger can hit;
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

import book_checks
import numpy as np
import pytest
import torch
from PIL import Image

import minsd
from minsd import live, toy
from minsd.dataset import COLOURS, classify, foreground_mask, nearest
from minsd.loading import DEFAULT_MODEL, load_pipeline
from minsd.preview import latents_to_rgb

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
             dict(colour="blue", shape="square", background="black", strength=0.86,
                  steps=20, guidance=7.5, seed=0)],
    "http": [dict(colour="red", shape="triangle", background="white", strength=0.46,
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


@functools.cache
def chapter_2_reference(seed: int) -> torch.Tensor:
    """The endpoints of 400 Heun steps from minsd.toy.starting_points(seed): (40, 2)."""
    fine_schedule = minsd.karras_sigmas(live.TOY_REFERENCE_STEPS + 1, 0.0, 20.0)
    return minsd.sample_heun(
        toy.example_mixture(), toy.starting_points(seed), fine_schedule
    )


def chapter_2_error(sampler, seed: int, n_steps: int) -> tuple[torch.Tensor, float]:
    """Chapter 2's measure: the sampler's path from minsd.toy.starting_points(seed) on
    karras_sigmas(N + 1, 0, 20), and its mean endpoint distance to 400 Heun steps."""
    schedule = minsd.karras_sigmas(n_steps + 1, sigma_min=0.0, sigma_max=20.0)
    path = toy.trajectory(
        sampler, toy.example_mixture(), toy.starting_points(seed), schedule
    )
    return path, (path[-1] - chapter_2_reference(seed)).norm(dim=1).mean().item()


def toy_state(page, root, **controls) -> dict:
    """Set the toy's controls and read what it computed."""
    for label, value in controls.items():
        if label == "sampler":
            set_choice(root, "sampler", value)
        else:
            set_range(
                root, {"steps": "steps N", "seed": "seed", "sigma": "σ"}[label], value
            )
    page.wait_for_function(
        "([root, n, s, seed]) => root.minsdResult?.n_steps === n && root.minsdResult.sampler"
        " === s && root.minsdResult.seed === seed && root.dataset.state === 'done'",
        arg=[
            root.element_handle(),
            controls["steps"],
            controls["sampler"],
            controls["seed"],
        ],
    )
    return root.evaluate(
        "(root) => ({x_start: Array.from(root.minsdResult.x_start), path: "
        "root.minsdResult.path.map((a) => Array.from(a)), error: root.minsdResult.error, "
        "sigmas: root.minsdResult.sigmas, caption: root.querySelector('.minsd-caption')"
        ".textContent})"
    )


@pytest.mark.parametrize("sampler", live.PAGE_SAMPLERS)
def test_toy_widget_measures_as_chapter_2(open_page, sampler):
    """The toy's paths and mean error, for N steps of each sampler the page offers, are
    chapter 2's: minsd's samplers on minsd.toy's exact denoiser from
    minsd.toy.starting_points(seed), against 400 Heun steps."""
    page, root = open_page("toy")
    samplers = {"euler": minsd.sample_euler, "heun": minsd.sample_heun,
                "dpmpp_2m": minsd.sample_dpmpp_2m}  # fmt: skip
    for n_steps, seed in ((4, 0), (23, 12)):
        got = toy_state(
            page, root, seed=seed, sampler=sampler, steps=n_steps, sigma=-0.5
        )
        x_start = toy.starting_points(seed)
        np.testing.assert_array_equal(np.array(got["x_start"]).reshape(-1, 2), x_start)
        sigmas = minsd.karras_sigmas(n_steps + 1, sigma_min=0.0, sigma_max=20.0)
        np.testing.assert_allclose(got["sigmas"], sigmas.numpy(), rtol=1e-12)
        path, error = chapter_2_error(samplers[sampler], seed, n_steps)
        path_error = np.abs(
            np.array(got["path"]).reshape(path.shape) - path.numpy()
        ).max()
        print(
            f"{open_page.kind}: toy, {sampler}, N = {n_steps}, seed {seed}: max |page - "
            f"minsd| {path_error:.2g}; mean error page {got['error']:.9f}, minsd "
            f"{error:.9f}"
        )
        # float32 states of size up to ~3 sigma_max = 60 (the page rounds once per
        # update, torch once per operation): 60 * 2^-24 a step
        assert path_error < 1e-4
        assert got["error"] == pytest.approx(error, abs=1e-4)
        assert f"mean error {error:.3f}" in got["caption"]
    screenshot(root, f"toy_{open_page.kind}_{sampler}")


# -- Chapter 9's compare widget --------------------------------------------------------

COMPARE_RUNS = {
    "file": dict(colour="green", shape="square", background="black", seed=3, columns=[
        dict(sampler="heun", spacing="karras", steps=7, guidance=5.0),
        dict(sampler="dpmpp_2m", spacing="linspace", steps=12, guidance=5.0)]),
    "http": dict(colour="red", shape="circle", background="white", seed=8, columns=[
        dict(sampler="euler", spacing="trailing", steps=15, guidance=7.5),
        dict(sampler="dpmpp_2m", spacing="karras", steps=9, guidance=3.0)]),
}  # fmt: skip


def settle(root) -> None:
    """Wait until the widget has drawn what its controls say (its API's run)."""
    root.evaluate("(root) => root.minsdWidget.run().then(() => null)")
    assert root.get_attribute("data-state") != "error", root.locator(
        ".minsd-status"
    ).text_content()


def compare_shown(root) -> list[dict]:
    """Per column: its options, pixels (H, W, 3), NFE and latent distance as shown,
    and the distance the page computed (before rounding for the text)."""
    columns = []
    for k in range(2):
        column = root.locator(".minsd-column").nth(k)
        nfe = column.locator(".minsd-nfe").text_content()
        distance = column.locator(".minsd-distance").text_content()
        computed = root.evaluate(
            f"(r) => (({{options, distance}}) => ({{options, distance}}))"
            f"(r.minsdResult.columns[{k}])"
        )
        columns.append({
            "options": computed["options"],
            "pixels": canvas_image(column, "canvas.minsd-result"),
            "nfe": int(re.fullmatch(r"(\d+) UNet evaluations \(NFE\)", nfe)[1]),
            "distance_text": re.fullmatch(r"latent distance ([0-9.]+)", distance)[1],
            "distance": computed["distance"],
        })  # fmt: skip
    return columns


compare_reference = functools.cache(live.compare_reference)  # (latents, pixels)


def check_against_minsd(kind: str, root, pipe, tolerance: float) -> None:
    """Each column's image, NFE and latent distance against minsd's (compare_run and
    the same reference computed with minsd); the reference pictures too."""
    references = root.locator(".minsd-references canvas")
    guidances = []
    for k, shown in enumerate(compare_shown(root)):
        o = shown["options"]
        column = {key: o[key] for key in ("sampler", "spacing", "steps", "guidance")}
        latents, pixels, nfe = live.compare_run(pipe, o["prompt"], o["seed"], **column)
        reference, _ = compare_reference(pipe, o["prompt"], o["seed"], o["guidance"])
        distance = minsd.book.rms(latents - reference).item()
        difference = max_pixel_difference(shown["pixels"], pixels[0])
        print(
            f"{kind}: compare column {k}: {o}: {difference:.2f}/255 from minsd; NFE "
            f"{shown['nfe']} (minsd {nfe}); latent distance page {shown['distance']:.6f},"
            f" minsd {distance:.6f} (relative {shown['distance'] / distance - 1:.1e})"
        )
        assert difference <= tolerance and shown["nfe"] == nfe
        assert shown["distance"] == pytest.approx(distance, rel=1e-3)
        assert shown["distance_text"] == f"{distance:.3f}"
        if o["guidance"] not in guidances:
            guidances.append(o["guidance"])
    assert references.count() == len(guidances)
    for k, guidance in enumerate(guidances):
        o = compare_shown(root)[0]["options"]
        _, pixels = compare_reference(pipe, o["prompt"], o["seed"], guidance)
        image = canvas_image(root, ".minsd-references canvas", k)
        assert max_pixel_difference(image, pixels[0]) <= tolerance


def test_compare_widget_measures_as_minsd(open_page, pipe):
    """On load, minsd's two columns for the opening controls; then a prompt, a seed and
    each column's sampler, spacing, N and g set on the page, and the equal cost switch:
    each image equals compare_run's (generate's) to 2/255, each NFE minsd's count, each
    latent distance minsd's (the same 100-step reference, in float32) to 1e-3."""
    page, root = open_page("compare")
    assert root.get_attribute("data-runs") == "0"
    check_against_minsd(f"{open_page.kind} on load", root, pipe, 0.5 + 1e-3)
    note = root.locator(".minsd-note").last.text_content()
    assert "DPM++ 2M with 100 steps on the Karras schedule" in note
    assert "RMS" in note and "512 steps" in note

    run = COMPARE_RUNS[open_page.kind]
    set_prompt(root, run["colour"], run["shape"], run["background"])
    set_range(root, "seed", run["seed"])
    for k, settings in enumerate(run["columns"]):
        column = root.locator(".minsd-column").nth(k)
        set_choice(column, "sampler", settings["sampler"])
        set_choice(column, "spacing", settings["spacing"])
        set_range(column, "steps N", settings["steps"])
        set_range(column, "guidance g", settings["guidance"])
    settle(root)
    check_against_minsd(open_page.kind, root, pipe, PIXEL_TOLERANCE)
    screenshot(root, f"compare_{open_page.kind}")

    # Equal cost: Euler at an odd N beside Heun at (N + 1)/2 steps, B following A.
    root.locator("button.minsd-toggle").click()
    settle(root)
    a, b = (shown["options"] for shown in compare_shown(root))
    assert a["sampler"] == "euler" and a["steps"] % 2 == 1
    assert b["sampler"] == "heun" and b["steps"] == (a["steps"] + 1) // 2
    assert (b["spacing"], b["guidance"]) == (a["spacing"], a["guidance"])
    assert root.locator(".minsd-column").nth(1).locator("select:disabled").count() == 2
    check_against_minsd(f"{open_page.kind} equal cost", root, pipe, PIXEL_TOLERANCE)
    nfe = [shown["nfe"] for shown in compare_shown(root)]
    assert nfe[0] == nfe[1] == a["steps"]
    screenshot(root, f"compare_equal_cost_{open_page.kind}")


def test_compare_try_lines_hold(open_page):
    """The compare widget's three lines, for what it computes on the opening prompt:
    at 10 steps each Euler's latent distance is about 20 times DPM++ 2M's; at equal cost
    (19 evaluations, Karras) Heun's about a quarter of Euler's; at g = 1 Euler's falls
    from 0.23 to about 0.01."""
    page, root = open_page("compare")

    def distances():
        shown = compare_shown(root)
        return [c["distance"] for c in shown], [c["nfe"] for c in shown]

    text = try_line(page, root, "N = 10 each")
    (euler, dpm), nfe = distances()
    print(f"{open_page.kind}: N = 10 each: {euler:.4f} / {dpm:.4f} = {euler / dpm:.1f}")
    assert "about 20 times" in text and nfe == [10, 10] and 15 < euler / dpm < 25
    assert root.locator(".minsd-highlight.minsd-distance").count() == 1

    text = try_line(page, root, "Equal cost")
    (euler, heun), nfe = distances()
    options = [c["options"] for c in compare_shown(root)]
    print(f"{open_page.kind}: equal cost: {options}: {euler:.4f} / {heun:.4f}")
    assert [o["sampler"] for o in options] == ["euler", "heun"]
    assert [o["steps"] for o in options] == [19, 10] and nfe == [19, 19]
    assert "about four times" in text and 3.5 < euler / heun < 5

    text = try_line(page, root, "g = 1")
    (euler, _), _ = distances()
    # the opening's, at g = 7.5: minsd's, drawn at build time
    opening = page.evaluate("() => minsdLiveConfig.first.compare.columns[0].distance")
    assert root.locator("button.minsd-toggle").get_attribute("aria-pressed") == "false"
    print(
        f"{open_page.kind}: g = 1: Euler's distance {euler:.4f}, at 7.5 {opening:.4f}"
    )
    assert "from 0.23 to about 0.01" in text
    assert round(opening, 2) == 0.23 and round(euler, 2) == 0.01


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


@pytest.mark.parametrize("widget", ["loop", "img2img", "toy", "compare", "attention"])
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


# -- What a reader sees on load, the try lines, the schedules, the phone ---------------


def canvas_image(root, selector: str, nth: int = 0) -> np.ndarray:
    return canvas_pixels(root.locator(selector).nth(nth))


def test_model_widgets_open_on_minsds_first_result(open_page, pipe):
    """Before any Run (and before the model loads), the loop shows minsd's run for its
    opening controls at its opening step, and image to image minsd's edit of chapter
    10's circle; run in the page, the same controls draw the same pictures."""
    page, loop = open_page("loop")
    assert loop.get_attribute("data-state") == "idle"
    loaded = page.evaluate(
        "() => performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert not [name for name in loaded if "onnx" in name or "wasm" in name]
    expected = pipe.generate(**live.LOOP_DEFAULTS, return_steps=True, progress=False)
    i = live.LOOP_STEP_SHOWN
    sigma = expected.sigmas[i]
    c_in = minsd.vp_coefficients(sigma, pipe.denoiser.sigma_table)[2].float()
    previews = {
        "image": expected.pixels[0],
        "denoised": pipe.decode(expected.steps[i]["denoised"])[0],
        "x": latents_to_rgb(c_in * expected.steps[i]["x"], pipe.preview_factors)[0],
    }
    canvases = {"x": 0, "denoised": 1, "image": 2}
    on_load = {
        name: canvas_image(loop, "canvas.minsd-pixels", k)
        for name, k in canvases.items()
    }
    for name, image in on_load.items():
        difference = max_pixel_difference(image, previews[name])
        print(
            f"{open_page.kind}: loop on load, {name}: {difference:.2f}/255 from minsd"
        )
        assert difference <= 0.5 + 1e-3  # minsd's pixels, rounded to 8 bits
    caption = loop.locator(".minsd-caption").first.text_content()
    assert caption.startswith(f"step i = {i} of N = {live.LOOP_DEFAULTS['steps']}: ")
    assert f"σ_i = {sigma.item():.3f}" in caption

    page2, img2img = open_page("img2img")
    drawing = canvas_image(img2img, "canvas.minsd-drawing")
    circle = live.hand_drawn_circle(pipe.default_size)
    assert max_pixel_difference(drawing, circle) <= 0.5 + 1e-3
    edit = pipe.generate(
        init_image=circle[None], **live.IMG2IMG_DEFAULTS, progress=False
    )
    edit_on_load = canvas_image(img2img, "canvas.minsd-result")
    assert max_pixel_difference(edit_on_load, edit.pixels[0]) <= 0.5 + 1e-3

    # Run in the page with the opening controls: the same pictures, to 2/255.
    loop.locator("button", has_text="Run").click()
    wait_for_run(page, loop, {"steps": live.LOOP_DEFAULTS["steps"]})
    loop.page.wait_for_function(
        f"(root) => root.querySelector('.minsd-caption').textContent.startsWith("
        f"'step i = {i} ')",
        arg=loop.element_handle(),
    )
    for name, k in canvases.items():
        computed = canvas_image(loop, "canvas.minsd-pixels", k).astype(int)
        difference = np.abs(computed - on_load[name]).max()
        print(
            f"{open_page.kind}: loop run in the page, {name}: {difference}/255 from on load"
        )
        assert difference <= PIXEL_TOLERANCE
    img2img.locator("button", has_text="Run").click()
    wait_for_run(page2, img2img, {"strength": live.IMG2IMG_DEFAULTS["strength"]})
    computed = canvas_image(img2img, "canvas.minsd-result").astype(int)
    difference = np.abs(computed - edit_on_load).max()
    print(f"{open_page.kind}: img2img run in the page: {difference}/255 from on load")
    assert difference <= PIXEL_TOLERANCE


def try_line(page, root, label: str) -> str:
    """Press a "try this" line's button; wait until the widget has drawn it; its text."""
    details = root.locator("details.minsd-try")
    details.evaluate("(d) => { d.open = true; }")
    line = details.locator("li", has=page.locator(f"button:text-is('{label}')"))
    line.evaluate("(li) => { delete li.dataset.state; }")
    line.locator("button").click()
    page.wait_for_function(
        "([root, li]) => root.dataset.state === 'error' || li.dataset.state === 'done'",
        arg=[root.element_handle(), line.element_handle()],
        timeout=180_000,
    )
    assert root.get_attribute("data-state") != "error"
    return line.text_content()


def shape_and_colour(image: np.ndarray) -> tuple[str | None, str | None]:
    found = classify(image)
    return found["colour"], found["shape"]


def tour_step(page, root, button: str, choice: str | None = None) -> dict:
    """Press the tour's Back or Next, as a reader would; on a card that asks, first
    check that nothing ran, then pick `choice`. Waits until the card is drawn; returns
    {card, text, highlighted}."""
    tour = root.locator(".minsd-tour")
    before = int(tour.get_attribute("data-card"))
    runs = root.get_attribute("data-runs")
    tour.locator(".minsd-tour-buttons button", has_text=button).click()
    card = before + (1 if button == "Next" else -1)
    page.wait_for_function(
        "([t, k]) => t.dataset.card === String(k) && t.dataset.state !== 'running'",
        arg=[tour.element_handle(), card],
        timeout=180_000,
    )
    if choice is not None:
        assert tour.get_attribute("data-state") == "asking"
        assert root.get_attribute("data-runs") == runs  # a guess first, then the run
        tour.locator(".minsd-tour-choices button", has_text=choice).click()
        page.wait_for_function(
            "(t) => t.dataset.state === 'done'", arg=tour.element_handle(),
            timeout=180_000,
        )  # fmt: skip
    assert root.get_attribute("data-state") != "error"
    assert tour.get_attribute("data-state") == "done"
    return {
        "card": card,
        "text": tour.locator(".minsd-tour-text").text_content(),
        "highlighted": root.locator(".minsd-highlight"),
    }


def rms_255(image: np.ndarray, other) -> float:
    """RMS difference of two (H, W, 3) images in 1/255; other may be minsd's pixels
    (3, H, W) in [0, 1]."""
    if isinstance(other, torch.Tensor):
        other = other.permute(1, 2, 0).numpy() * 255
    return float(np.sqrt(((image.astype(float) - other) ** 2).mean()))


def wait_for_step(page, root, i: int) -> None:
    page.wait_for_function(
        f"(root) => root.querySelector('.minsd-caption').textContent"
        f".startsWith('step i = {i} ')",
        arg=root.element_handle(),
    )


def test_loop_tour_holds(open_page, pipe):
    """The loop's guided tour, card by card (Next, and a guess where a card asks),
    each claim measured on what the widget draws: the estimate at step 10 already the
    red circle; N = 1 lands on D(x_0; sigma_0); red from step 2, a circle from step 8;
    N = 4 a shapeless blur, N = 8 the circle; g = 1 a red first estimate and a smaller
    circle; DPM++ 2M on Karras within 1/255 of its 50-step image, Euler about 9/255."""
    page, root = open_page("loop")
    tour = root.locator(".minsd-tour")
    # 1. On load, before any run: the opening, step 10 of 20.
    assert (
        tour.get_attribute("data-card") == "0"
        and root.get_attribute("data-runs") == "0"
    )
    text = tour.locator(".minsd-tour-text").text_content()
    assert "Step i = 10 of 20, σ_i ≈ 1.5" in text and "red circle" in text
    assert root.locator(".minsd-highlight canvas").count() == 1
    caption = root.locator(".minsd-caption").text_content()
    assert caption == "step i = 10 of N = 20: σ_i = 1.481"
    default_image = canvas_image(root, "canvas.minsd-result")
    denoised = canvas_image(root, "canvas.minsd-pixels", 1)
    assert shape_and_colour(denoised) == ("red", "circle")
    assert rms_255(denoised, default_image) < 20  # "already shows the red circle"
    default_area = foreground_mask(default_image).sum()

    # 2. N = 1 asks first; the image is D(x_0; sigma_0), no shape.
    card = tour_step(page, root, "Next", choice="noise")  # a wrong guess
    assert card["text"].startswith("Not quite: the first estimate D(x₀; σ₀).")
    image = canvas_image(root, "canvas.minsd-result")
    assert card["highlighted"].locator("canvas.minsd-result").count() == 1
    assert (
        np.abs(image.astype(int) - canvas_image(root, "canvas.minsd-pixels", 1)).max()
        <= 1
    )
    assert shape_and_colour(image) == (None, None)

    # 3. Colour first, then shape, over the 20 steps of the opening run.
    card = tour_step(page, root, "Next")
    assert (
        "red from step 2" in card["text"] and "circle only from step 8" in card["text"]
    )
    assert card["highlighted"].locator("input[type=range]").count() == 1  # step i
    for i in range(live.LOOP_DEFAULTS["steps"]):
        set_range(root, "step i", i)
        wait_for_step(page, root, i)
        colour, shape = shape_and_colour(canvas_image(root, "canvas.minsd-pixels", 1))
        print(f"{open_page.kind}: D(x_{i}) looks {colour} {shape}")
        assert (colour == "red") == (i >= 2) and (shape == "circle") == (i >= 8)

    # 4. N = 4 asks first: a dark blur with no shape.
    card = tour_step(page, root, "Next", choice="no, no shape at all")
    assert card["text"].startswith("Right. Four steps") and "no shape" in card["text"]
    found = classify(canvas_image(root, "canvas.minsd-result"))
    assert (found["colour"], found["shape"], found["background"]) == (
        None,
        None,
        "black",
    )

    # 5. N = 8: the red circle, within 30/255 RMS of the 20-step image.
    card = tour_step(page, root, "Next")
    image = canvas_image(root, "canvas.minsd-result")
    print(
        f"{open_page.kind}: N = 8: RMS {rms_255(image, default_image):.1f}/255 from N = 20"
    )
    assert "30/255" in card["text"] and shape_and_colour(image) == ("red", "circle")
    assert 0 < rms_255(image, default_image) < 30

    # 6. g = 1: the first estimate is red (dark at g = 7.5); a smaller circle.
    card = tour_step(page, root, "Next")
    assert "g = 1" in card["text"] and "smaller" in card["text"]
    wait_for_step(page, root, 0)
    assert shape_and_colour(canvas_image(root, "canvas.minsd-pixels", 1))[0] == "red"
    image = canvas_image(root, "canvas.minsd-result")
    assert shape_and_colour(image) == ("red", "circle")
    assert foreground_mask(image).sum() < default_area

    # 7. DPM++ 2M on Karras asks first: within 1/255 of its 50 steps; Euler ~9/255.
    card = tour_step(page, root, "Next", choice="DPM++ 2M's")
    assert "within 1/255" in card["text"] and "about 9/255" in card["text"]
    fine_settings = dict(live.LOOP_DEFAULTS, sampler="dpmpp_2m", spacing="karras")
    fine_settings["steps"] = 50
    fine = pipe.generate(**fine_settings, progress=False).pixels[0]
    near = rms_255(canvas_image(root, "canvas.minsd-result"), fine)
    far = rms_255(default_image, fine)
    print(f"{open_page.kind}: 50 DPM++ 2M steps from DPM++ 2M's 20: {near:.2f}/255, "
          f"from Euler's 20: {far:.2f}/255")  # fmt: skip
    assert near < 1 and 7 < far < 11
    assert tour.locator("button", has_text="Next").is_disabled()

    # Back: the card before is drawn again.
    tour_step(page, root, "Back")
    assert root.evaluate("(r) => r.minsdResult.options.guidance") == 1
    screenshot(root, f"loop_tour_{open_page.kind}")


def test_img2img_tour_holds(open_page, pipe):
    """Image to image's guided tour on chapter 10's circle, each claim measured on what
    the widget draws: strength 0.05 of 50 steps keeps a red circle in place; 0.1 turns
    it blue in place; 0.5 starts at a tenth of sigma_0 with the square in place; 1
    covers the circle less; 0.05 of 20 steps comes back as close as the VAE's round
    trip; guidance 7.5 turns it blue at 0.05."""
    page, root = open_page("img2img")
    tour = root.locator(".minsd-tour")
    drawing = live.hand_drawn_circle(pipe.default_size)  # (3, H, W)
    circle = foreground_mask(drawing.permute(1, 2, 0).numpy() * 255)  # (H, W)
    red_pixels = np.abs(
        drawing.permute(1, 2, 0).numpy() - np.array([205, 50, 45]) / 255
    )
    inside = red_pixels.max(axis=2) < 1e-6  # the circle's own pixels
    palette = {name: COLOURS[name] for name in ("red", "blue")}

    def seen(k: int, text: str) -> dict:
        image = canvas_image(root, "canvas.minsd-result")
        shape = foreground_mask(image)
        caption = root.locator(".minsd-caption").text_content()
        found = {
            "colour": nearest(image[inside].mean(axis=0), palette),
            "shape": classify(image)["shape"],
            "overlap": (shape & circle).sum() / (shape | circle).sum(),
            "sigma_k": float(re.search(r"σ_k = ([0-9.]+)", caption)[1]),
            "ran": int(re.search(r"ran the last (\d+) ", caption)[1]),
            "image": image,
        }
        print(f"{open_page.kind}: card {k}: {found | {'image': None}}: {text!r}")
        return found

    assert tour.get_attribute("data-card") == "0"
    found = seen(0, tour.locator(".minsd-tour-text").text_content())
    assert (found["colour"], found["shape"], found["ran"]) == ("red", "circle", 2)
    assert (
        found["sigma_k"] == pytest.approx(0.14, abs=0.005) and found["overlap"] > 0.85
    )

    card = tour_step(page, root, "Next", choice="it turns blue, in its place")
    found = seen(1, card["text"])
    assert card["text"].startswith("Right.") and "σ_k ≈ 0.3" in card["text"]
    assert found["sigma_k"] == pytest.approx(0.3, abs=0.01) and found["ran"] == 5
    assert found["colour"] == "blue" and found["overlap"] > 0.8

    card = tour_step(page, root, "Next")
    found = seen(2, card["text"])
    sigma_0 = pipe.denoiser.sigma_table[-1].item()
    assert "k = 25" in card["text"] and "σ_k ≈ 1.6" in card["text"]
    assert found["ran"] == 25 and found["sigma_k"] == pytest.approx(1.6, abs=0.05)
    assert 0.08 < found["sigma_k"] / sigma_0 < 0.12  # "about a tenth of sigma_0"
    assert (found["colour"], found["shape"]) == ("blue", "square")
    assert found["overlap"] > 0.7
    half_overlap = found["overlap"]

    card = tour_step(page, root, "Next", choice="yes")
    found = seen(3, card["text"])
    assert card["text"].startswith("Not quite: only partly.")
    assert found["ran"] == 50 and found["sigma_k"] == pytest.approx(14.6, abs=0.05)
    assert found["colour"] == "blue" and found["overlap"] < half_overlap

    card = tour_step(page, root, "Next")
    found = seen(4, card["text"])
    assert found["ran"] == 1 and found["sigma_k"] == pytest.approx(0.03, abs=0.005)
    round_trip = pipe.decode(pipe.encode(drawing[None]))[0]
    vae_error = rms_255(drawing.permute(1, 2, 0).numpy() * 255, round_trip)
    error = rms_255(found["image"], drawing)
    print(f"{open_page.kind}: from the drawing: {error:.2f}/255, the VAE alone "
          f"{vae_error:.2f}/255")  # fmt: skip
    assert vae_error < error < 1.1 * vae_error  # "hardly more"

    card = tour_step(page, root, "Next", choice="blue")
    found = seen(5, card["text"])
    assert found["ran"] == 2 and found["colour"] == "blue"
    assert card["highlighted"].locator("canvas.minsd-result").count() == 1
    screenshot(root, f"img2img_tour_{open_page.kind}")


def test_toy_try_lines_hold(open_page):
    """The toy's three lines, for what it computes: one step lands near the data's
    mean; four steps err more than three and from N = 8 on every step helps; Heun at
    N = 2 flies off, at N = 20 it errs less than half as much as Euler."""
    page, root = open_page("toy")
    seed = 7  # the lines hold for every offered seed; minsd checks them all below

    def error(sampler, n):
        return toy_state(page, root, seed=seed, sampler=sampler, steps=n)["error"]

    set_range(root, "seed", seed)
    text = try_line(page, root, "N = 1")
    assert "within 0.6" in text and "nearer than 1" in text
    ends = np.array(root.evaluate("(r) => Array.from(r.minsdResult.path.at(-1))"))
    ends = torch.tensor(ends).reshape(-1, 2)
    mixture = toy.example_mixture()
    data_mean = mixture.weights.double() @ mixture.means  # (2,): (-0.4, -0.4)
    assert torch.allclose(data_mean, torch.tensor([-0.4, -0.4], dtype=torch.float64))
    assert (ends - data_mean).norm(dim=1).max() < 0.6
    assert torch.cdist(ends, mixture.means).min() > 1
    try_line(page, root, "N = 4")
    errors = {n: error("euler", n) for n in range(3, 51) if n in (3, 4) or n >= 8}
    assert errors[4] > errors[3]
    assert all(errors[n] > errors[n + 1] for n in range(8, 50))
    try_line(page, root, "Heun, N = 2")
    heun_2 = root.evaluate("(r) => r.minsdResult.error")
    assert 10 < heun_2 < 30  # "near 20"
    assert error("heun", 20) < 0.5 * error("euler", 20)

    for s in range(live.TOY_SEEDS):  # the same, for every seed, in minsd
        one = chapter_2_error(minsd.sample_euler, s, 1)[0][-1].double()
        assert (one - data_mean).norm(dim=1).max() < 0.6
        assert torch.cdist(one, mixture.means).min() > 1
        euler = {n: chapter_2_error(minsd.sample_euler, s, n)[1] for n in (2, 3, 4, 20)}
        assert euler[4] > euler[3]
        heun = {n: chapter_2_error(minsd.sample_heun, s, n)[1] for n in (2, 20)}
        assert 10 < heun[2] < 30 and heun[20] < 0.5 * euler[20]


@pytest.mark.parametrize("open_page", ["file"], indirect=True)  # http: the same scripts
def test_the_page_schedules_equal_get_sigmas(open_page, pipe):
    """scheduler.js's get_sigmas, on the table the page builds from the betas, equals
    minsd's for every spacing and N = 1..100, and refuses what minsd refuses."""
    page, root = open_page("loop")
    table = page.evaluate("() => minsd.ui.sigma_table()")
    np.testing.assert_allclose(table, pipe.denoiser.sigma_table.numpy(), rtol=1e-12)
    got = page.evaluate(
        """(spacings) => Object.fromEntries(spacings.map((spacing) => [spacing,
            Array.from({length: 100}, (_, k) =>
              minsd.scheduler.get_sigmas(minsd.ui.sigma_table(), k + 1, spacing))]))""",
        list(minsd.SPACINGS),
    )
    for spacing in minsd.SPACINGS:
        for n in range(1, 101):
            expected = minsd.get_sigmas(pipe.denoiser.sigma_table, n, spacing)
            np.testing.assert_allclose(
                got[spacing][n - 1], expected.numpy(), rtol=1e-12, atol=0,
                err_msg=f"{spacing}, N = {n}",
            )  # fmt: skip
    refused = [(0, "linspace"), (1001, "leading"), (1000, "leading"), (1001, "trailing"),
               (5, "cosine"), (2.5, "karras")]  # fmt: skip
    for n, spacing in refused:
        with pytest.raises(ValueError):
            minsd.get_sigmas(pipe.denoiser.sigma_table, n, spacing)
        message = page.evaluate(
            """([n, spacing]) => { try { minsd.scheduler.get_sigmas(minsd.ui.sigma_table(),
                n, spacing); return null; } catch (e) { return e.message; } }""",
            [n, spacing],
        )
        print(f"N = {n}, {spacing}: the page refuses: {message}")
        assert message is not None


def test_the_page_offers_minsds_samplers_and_spacings(open_page):
    """One list: the samplers and spacings in the widgets' menus are minsd's (less
    euler_ancestral, whose noise the page cannot draw), and the page's generate runs
    every one of them."""
    page, root = open_page("loop")
    menus = root.evaluate(
        "(root) => Array.from(root.querySelectorAll('label.minsd-control select'),"
        " (s) => Array.from(s.options, (o) => o.value))"
    )
    assert list(live.PAGE_SAMPLERS) in menus and list(minsd.SPACINGS) in menus
    assert set(live.PAGE_SAMPLERS) == set(minsd.SAMPLERS) - {"euler_ancestral"}
    runs = page.evaluate("() => Object.keys(minsd.pipeline.SAMPLERS)")
    assert sorted(runs) == sorted(live.PAGE_SAMPLERS)


FALLBACK = (
    '<p class="minsd-live-fallback">This widget runs the default model in the rendered '
    "book's page. Here, in Jupyter, the live slider right below draws the same with "
    "Python.</p>"
)


@pytest.mark.parametrize("widget", ["toy", "loop", "img2img", "compare", "attention"])
def test_a_fallback_paragraph_gives_way_to_the_widget(book, server, browser, widget):
    """A chapter's block may hold a sentence for JupyterLab's readers (or be empty, as
    before); in the book the widget takes its place."""
    name = page_with(book, widget)
    block = re.compile(
        f'<div class="minsd-live"( id="[^"]*")? data-widget="{widget}">(<p .*?</p>)?</div>'
    )
    text, found = block.subn(
        f'<div class="minsd-live" data-widget="{widget}">{FALLBACK}</div>',
        (book / name).read_text(),
    )
    assert found == 1
    page = browser.new_page()
    page.route(
        f"{server}/{name}",
        lambda route: route.fulfill(body=text, content_type="text/html"),
    )
    page.goto(f"{server}/{name}", wait_until="load")
    root = page.locator(f'.minsd-live[data-widget="{widget}"]')
    page.wait_for_function("(r) => r.dataset.started", arg=root.element_handle())
    assert page.locator(".minsd-live-fallback").count() == 0
    assert root.locator("canvas").count() > 0
    page.close()


@pytest.mark.parametrize("size", [(1280, 900), (820, 1180), (390, 844)])
def test_widgets_fit_the_column_and_open_drawn(book, browser, size):
    """At a desktop's, a tablet's and a phone's width: every widget shows a drawn
    first result on load, is no wider than the text column, has controls at least
    book_checks.MIN_CONTROL_PX tall, and nothing covers it (book_checks' measures)."""
    width, height = size
    for widget in ("toy", "loop", "img2img", "compare", "attention"):
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto((book / page_with(book, widget)).as_uri(), wait_until="load")
        root = page.locator(f'.minsd-live[data-widget="{widget}"]')
        page.wait_for_function(
            "(r) => r.minsdResult !== undefined", arg=root.element_handle()
        )
        seen = root.evaluate(book_checks.LIVE_FIRST_RESULT)
        column = page.evaluate(
            "() => (document.querySelector('main article') || "
            "document.querySelector('main')).getBoundingClientRect().right"
        )
        box = root.bounding_box()
        controls = root.evaluate(
            """(root) => Array.from(root.querySelectorAll("input, select, button"))
                .filter((e) => e.getClientRects().length)
                .map((e) => [e.tagName, e.getBoundingClientRect().height])"""
        )
        overflow = root.evaluate(
            "(root) => Array.from(root.querySelectorAll('*')).filter((e) => "
            "e.getBoundingClientRect().right > root.getBoundingClientRect().right + 1)"
            ".length"
        )
        covered = root.evaluate(book_checks.COVERED)
        print(
            f"{width} x {height}, {widget}: {seen}, {box['width']:.0f} x "
            f"{box['height']:.0f} px, right edge {box['x'] + box['width']:.0f} of "
            f"{column:.0f}, lowest control {min(h for _, h in controls):.0f} px"
        )
        assert seen["canvases"] and not seen["empty"]
        assert box["x"] + box["width"] <= column + 1 and not overflow
        assert all(h >= book_checks.MIN_CONTROL_PX for _, h in controls), controls
        assert covered is None, covered
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        root.screenshot(path=str(SCREENSHOTS / f"{widget}_{width}.png"))
        page.close()


# -- Chapter 11: the cross-attention maps of the reader's prompt ------------------------


ATTENTION_RUNS = {
    "file": dict(colour="green", shape="triangle", background="white", seed=3,
                 views=[(4, "4 × 4"), (13, "2 × 2")]),
    "http": dict(colour="blue", shape="square", background="black", seed=41,
                 views=[(0, "8 × 8"), (9, "4 × 4")]),
}  # fmt: skip
# The page's maps against minsd.attention_maps': the issue's bound. Both are float32
# softmax weights near 1/T = 0.06, computed in another order: ~1e-7 apart.
MAP_TOLERANCE = 1e-4


def attention_levels(attention) -> dict:
    """{(h_l, w_l): the layers at that size}, finest first, less 1 x 1 (one position):
    the levels the widget offers, as chapter 11 groups them."""
    levels = {}
    for name, maps in attention.maps.items():
        levels.setdefault(tuple(maps.shape[-2:]), []).append(name)
    return {size: names for size, names in levels.items() if size != (1, 1)}


def minsds_maps(attention, size, step) -> np.ndarray:
    """AttentionMaps.token_maps of one step at one level, at its own size: (T, h w)."""
    names = attention_levels(attention)[size]
    return attention.token_maps(names, [step], size).flatten(1).numpy()


def show_view(page, root, step: int, level: str) -> dict:
    """Drag the step slider and pick the level, as a reader would; what is drawn."""
    set_range(root, "step i", step)
    set_choice(root, "level", level)
    page.wait_for_function(
        "([root, i, level]) => root.querySelector('.minsd-caption').textContent"
        ".startsWith(`step i = ${i} `) && root.minsdShown.level.join(' × ') === level",
        arg=[root.element_handle(), step, level],
    )
    return root.evaluate("(root) => root.minsdShown")


def test_attention_widget_records_minsds_maps(open_page, pipe):
    """A prompt and a seed set on the page; Run: the image equals pipe.generate's, and
    the maps of every step at every level (each token's, averaged over the level's
    layers) equal minsd.attention_maps' for the same prompt, seed and steps, to 1e-4;
    so do the panels the step slider and the level menu then show."""
    from minsd.attention_maps import cross_attention_maps

    page, root = open_page("attention")
    run = ATTENTION_RUNS[open_page.kind]
    prompt = f"a {run['colour']} {run['shape']} on a {run['background']} background"
    set_prompt(root, run["colour"], run["shape"], run["background"])
    set_range(root, "seed", run["seed"])
    root.locator("button", has_text="Run").click()
    got = wait_for_run(page, root, dict(prompt=prompt, seed=run["seed"]))
    defaults = {k: v for k, v in live.ATTENTION_DEFAULTS.items() if k != "prompt"}
    defaults["seed"] = run["seed"]
    attention = cross_attention_maps(pipe, prompt, **defaults, progress=False)
    difference = max_pixel_difference(
        canvas_pixels(root.locator("canvas.minsd-result")),
        attention.generation.pixels[0],
    )
    assert difference <= PIXEL_TOLERANCE
    levels = root.evaluate(
        "(root) => root.minsdResult.levels.map((l) => ({size: l.size, layers: l.layers,"
        " maps: Array.from(l.maps)}))"
    )
    expected = attention_levels(attention)
    assert [tuple(level["size"]) for level in levels] == list(expected)
    steps = live.ATTENTION_DEFAULTS["steps"]
    for level in levels:
        size = tuple(level["size"])
        assert level["layers"] == expected[size]
        maps = np.array(level["maps"]).reshape(steps, -1, size[0] * size[1])
        minsd_maps = np.stack([minsds_maps(attention, size, i) for i in range(steps)])
        error = np.abs(maps - minsd_maps).max()
        print(
            f"{open_page.kind}: {prompt}, seed {run['seed']}: level {size}, "
            f"{len(level['layers'])} layers, {steps} steps: max |page - minsd| "
            f"{error:.1e} (maps near {minsd_maps.mean():.3f}); image {difference:.2f}/255"
            f" ({got['ms']:.0f} ms in the page)"
        )
        assert error < MAP_TOLERANCE
    for step, level in run["views"]:
        shown = show_view(page, root, step, level)
        size = tuple(shown["level"])
        error = np.abs(np.array(shown["maps"]).reshape(-1, size[0] * size[1])
                       - minsds_maps(attention, size, step)).max()  # fmt: skip
        print(
            f"  step {step}, {level}: the panels' maps, max |page - minsd| {error:.1e}"
        )
        assert error < MAP_TOLERANCE
        tokens = pipe.tokenizer.tokenize(prompt)
        assert shown["labels"] == ["start", *[t.removesuffix("</w>") for t in tokens],
                                   "end", "pad (mean)"]  # fmt: skip
    screenshot(root, f"attention_{open_page.kind}")


def test_attention_widget_opens_on_minsds_maps(open_page, pipe):
    """Before any Run (and before the model loads) the widget shows minsd's maps of
    chapter 11's prompt at its opening step and level, the image and D(x_i; sigma_i);
    every step and level is there without the model; run in the page, the same
    controls draw the same maps."""
    from minsd.attention_maps import cross_attention_maps

    page, root = open_page("attention")
    assert root.get_attribute("data-state") == "idle"
    attention = cross_attention_maps(
        pipe, **live.ATTENTION_DEFAULTS, return_steps=True, progress=False
    )
    i = live.ATTENTION_STEP_SHOWN
    shown = root.evaluate("(root) => root.minsdShown")
    assert (
        shown["step"] == i
        and tuple(shown["level"]) == next(iter(attention.maps.values())).shape[-2:]
    )
    on_load = np.array(shown["maps"])
    assert np.abs(on_load - minsds_maps(attention, (8, 8), i).flatten()).max() < 1e-6
    image = canvas_image(root, "canvas.minsd-result")
    assert max_pixel_difference(image, attention.generation.pixels[0]) <= 0.5 + 1e-3
    denoised = pipe.decode(attention.generation.steps[i]["denoised"])[0]
    assert (
        max_pixel_difference(canvas_image(root, "canvas.minsd-pixels", 1), denoised)
        <= 0.5 + 1e-3
    )
    shown = show_view(page, root, 3, "2 × 2")
    assert (
        np.abs(
            np.array(shown["maps"]) - minsds_maps(attention, (2, 2), 3).flatten()
        ).max()
        < 1e-6
    )
    loaded = page.evaluate(
        "() => performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert not [name for name in loaded if "onnx" in name or "wasm" in name]
    assert root.get_attribute("data-state") == "idle"

    show_view(page, root, i, "8 × 8")
    root.locator("button", has_text="Run").click()
    wait_for_run(page, root, {"prompt": live.ATTENTION_DEFAULTS["prompt"]})
    assert root.evaluate("(root) => root.minsdResult.prerendered") is None
    computed = np.array(root.evaluate("(root) => root.minsdShown.maps"))
    error = np.abs(computed - on_load).max()
    print(f"{open_page.kind}: attention run in the page: max {error:.1e} from on load")
    assert error < MAP_TOLERANCE


def panel_r(shown: dict) -> np.ndarray:
    """Pearson's r between the shown panels' maps (the tokens to the end token, then
    the padding's mean), over the positions: (panels, panels)."""
    size = shown["level"][0] * shown["level"][1]
    maps = np.array(shown["maps"]).reshape(-1, size)
    end = len(shown["labels"]) - 2
    panels = np.concatenate([maps[: end + 1], maps[end + 1 :].mean(0, keepdims=True)])
    return np.corrcoef(panels)


def test_attention_try_lines_hold(open_page):
    """The attention widget's two lines, as it draws them: at step 0, D shows no shape
    and the maps already have a pattern as strong as at the last step; at the last step, the first four positions'
    maps look alike and the end token's and the padding's are their negative."""
    page, root = open_page("attention")
    last = root.evaluate("(root) => root.minsdShown.limit")
    text = try_line(page, root, "step i = 0")
    assert "no shape yet" in text and "as strong as at the last step" in text
    shown = root.evaluate("(root) => root.minsdShown")
    assert (
        shown["step"] == 0 and root.locator(".minsd-highlight.minsd-maps").count() == 1
    )
    estimate = canvas_image(root, "canvas.minsd-pixels", 1)
    print(f"{open_page.kind}: step 0: D reads {shape_and_colour(estimate)}, maps "
          f"within ±{shown['limit']:.1f} % (the last step's ±{last:.1f} %)")  # fmt: skip
    assert shape_and_colour(estimate)[1] is None and shown["limit"] >= last

    text = try_line(page, root, "by place")
    assert "(start, a, red, circle) look alike" in text and "their negative" in text
    shown = root.evaluate("(root) => root.minsdShown")
    r = panel_r(shown)
    end = len(shown["labels"]) - 2
    print(f"{open_page.kind}: last step: r among the first four {r[:4, :4].min():.2f}"
          f" at least; with the end token and the padding {r[:4, end:].max():.2f} at"
          " most")  # fmt: skip
    assert shown["step"] == live.ATTENTION_DEFAULTS["steps"] - 1
    assert r[:4, :4].min() > 0.3 and r[:4, end:].max() < -0.3
    screenshot(root, f"attention_try_{open_page.kind}")
