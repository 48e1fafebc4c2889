"""The default model in the reader's browser: ms per UNet call in headless Chromium (ONNX
Runtime Web, one WebAssembly thread) beside torch's (one thread) on the same model, the
time of a guided 20-step Euler image in the page, a run of chapter 11's attention widget
and of chapter 9's comparison, how soon the widgets show their first pictures, and the
page weight the live widgets add.

    python benchmarks/browser.py [--quick] [--busy K] [--live DIR]

It exports the model as the book build does (minsd.live; --live reuses an export, such
as the one a book build keeps in _build/.minsd_live/KEY/), opens a bare page with the
widgets, their scripts and settings as the build writes them (book/_ext/minsd_live.py),
from file:// in /usr/bin/chromium, and times there: the first pictures (drawn on load,
before any model), the first load (runtime and model), UNet calls at batch 2 (uncond +
cond; with and without the attention maps as outputs), whole images (20 Euler steps with
guidance 7.5, then the VAE decoder), attention runs (the same, recording the maps, then
drawn) and comparisons of chapter 9's widget (two columns of 20 steps, and with a new
100-step reference), each the median of several runs after a warm-up. --busy K keeps K
processes spinning beside the browser, as on a busy machine. The target is at most 1 s
per image on a busy 2-core machine.
"""

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from minsd import live
from minsd.loading import DEFAULT_MODEL, load_pipeline

ROOT = Path(__file__).resolve().parents[1]
LIVE = ROOT / "book" / "live"
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import minsd_live  # noqa: E402  (the book's extension: its scripts and settings)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PROMPT = "a blue circle on a white background"
WIDGETS = ("toy", "loop", "img2img", "compare", "attention")

# When every widget of the page had drawn its first picture, in ms from navigation.
FIRST_PICTURES = """async () => {
  const roots = [...document.querySelectorAll(".minsd-live")];
  while (!roots.every((r) => r.minsdResult !== undefined)) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return performance.now();
}"""

# What the measures below share, added to the page as a script: the median, and the
# ms per call of a UNet at batch 2 (uncond + cond: here the prompt twice), after three
# calls to warm up.
HELPERS = """
function median(v) {
  return v.slice().sort((a, b) => a - b)[Math.floor(v.length / 2)];
}
async function unet_call_ms(unet, model, calls) {
  const x = new Float32Array(2 * 4 * 8 * 8).fill(0.5);
  const t = new Float32Array([500, 500]);
  const context = model.data.embedding("%PROMPT%");
  const both = new Float32Array(2 * context.length);
  both.set(context); both.set(context, context.length);
  const ms = [];
  for (let k = 0; k < calls + 3; k++) {
    const s = performance.now();
    await unet.call(model, x, t, both);
    if (k >= 3) ms.push(performance.now() - s);
  }
  return median(ms);
}""".replace("%PROMPT%", PROMPT)

MEASURE = """async ([unet_calls, images]) => {
  const t0 = performance.now();
  const model = await minsd.runtime.load();
  const load_ms = performance.now() - t0;
  const unet_ms = await unet_call_ms(model.unet, model, unet_calls);
  const options = {prompt: "%PROMPT%", steps: 20, guidance: 7.5, seed: 0,
                   sampler: "euler", spacing: "linspace"};
  const image_ms = [];
  for (let k = 0; k < images + 1; k++) {
    const s = performance.now();
    await minsd.pipeline.generate(model, options);
    if (k >= 1) image_ms.push(performance.now() - s);
  }
  return {load_ms, unet_ms, image_ms: median(image_ms),
          image_min_ms: Math.min(...image_ms), image_max_ms: Math.max(...image_ms)};
}""".replace("%PROMPT%", PROMPT)

# Chapter 9's compare widget, through its API: a new g (both columns, then the
# 100-step reference), then new N (both columns, the reference kept), medians.
COMPARE = """async (runs) => {
  const widget = document.querySelector('.minsd-live[data-widget="compare"]').minsdWidget;
  const with_reference = [];
  const columns = [];
  for (let k = 0; k < runs + 1; k++) {
    let s = performance.now();
    await widget.set({guidance_a: 5 + k / 2, guidance_b: 5 + k / 2}).run();
    if (k >= 1) with_reference.push(performance.now() - s);
    s = performance.now();
    await widget.set({steps_a: 20 + (k % 2), steps_b: 20 + (k % 2)}).run();
    if (k >= 1) columns.push(performance.now() - s);
  }
  return {compare_reference_ms: median(with_reference), compare_ms: median(columns)};
}"""

# Chapter 11's widget: its first picture alone (a second one built on the page: minsd's
# maps decoded and drawn), then, the model loaded, a UNet call with every attention map
# as an output, and a run (20 steps recording the maps, then the image and the map
# panels drawn), from the API's run() to the picture, for other seeds each time.
ATTENTION = """async ([unet_calls, runs]) => {
  const firsts = [];
  for (let k = 0; k < 5; k++) {
    const root = document.createElement("div");
    document.body.append(root);
    const s = performance.now();
    minsd.widgets.attention(root);  // draws minsd's maps before it returns
    firsts.push(performance.now() - s);
    root.remove();
  }
  const model = await minsd.runtime.load();
  const unet_maps_ms = await unet_call_ms(model.unet_maps, model, unet_calls);
  const widget = document.querySelector("[data-widget=attention]").minsdWidget;
  const run_ms = [];
  for (let k = 0; k < runs + 1; k++) {
    const s = performance.now();
    await widget.set({prompt: "%PROMPT%", seed: k + 1}).run();
    if (k >= 1) run_ms.push(performance.now() - s);
  }
  return {attention_first_ms: median(firsts), unet_maps_ms,
          run_ms: median(run_ms),
          run_min_ms: Math.min(...run_ms), run_max_ms: Math.max(...run_ms)};
}""".replace("%PROMPT%", PROMPT)


def prepare(folder: Path, export: Path | None) -> tuple[Path, dict]:
    """The page's files in folder/_live and a bare page with the three widgets, their
    scripts and settings as the book build writes them; the settings."""
    out = folder / "_live"
    if export is not None:
        shutil.copytree(export, out)
    else:
        live.export(out)
        live.write_runtime(LIVE / "node_modules" / "onnxruntime-web" / "dist", out)
    for name in (*minsd_live.SCRIPTS, "live.css"):
        shutil.copyfile(LIVE / name, out / name)
    first = json.loads((out / live.FIRST_RESULTS).read_text())
    settings = {**minsd_live.page_settings(live, out), "first": first}
    blocks = "".join(
        f'<div class="minsd-live" data-widget="{w}"></div>' for w in WIDGETS
    )
    tags = "".join(
        f'<script src="_live/{name}"></script>' for name in minsd_live.SCRIPTS
    )
    page = folder / "index.html"
    page.write_text(
        "<!doctype html><meta charset='utf-8'><title>bench</title>"
        f"<link rel='stylesheet' href='_live/live.css'>{blocks}"
        f"<script>globalThis.minsdLiveConfig = {json.dumps(settings)};</script>{tags}"
    )
    return page, settings


def gzipped(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=6))


def page_weight(out: Path, settings: dict) -> dict:
    """Bytes (raw, gzipped) of what the widget pages load: on load the scripts, the
    stylesheet and the settings with each widget's first result (inline in its page),
    then on the first Run the runtime, data and networks."""
    on_load = [(out / name).read_bytes() for name in (*minsd_live.SCRIPTS, "live.css")]
    common = {k: v for k, v in settings.items() if k != "first"}
    for widget, first in settings["first"].items():
        on_load.append(json.dumps({**common, "first": {widget: first}}).encode())
    on_run = [
        (out / f"{name}.js").read_bytes()
        for name in (*live.RUNTIME, live.DATA, *live.NETWORKS)
    ]
    return {
        "on_load": (sum(map(len, on_load)), sum(map(gzipped, on_load))),
        "on_run": (sum(map(len, on_run)), sum(map(gzipped, on_run))),
    }


def busy_processes(count: int) -> list[subprocess.Popen]:
    """count processes that keep a core busy, as other work on the machine would."""
    spin = [sys.executable, "-c", "while True: pass"]
    return [subprocess.Popen(spin) for _ in range(count)]


def in_browser(page: Path, unet_calls: int, images: int) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        tab = browser.new_page()
        errors = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(page.as_uri())
        first_pictures_ms = tab.evaluate(FIRST_PICTURES)
        tab.add_script_tag(content=HELPERS)
        result = tab.evaluate(MEASURE, [unet_calls, images])
        result.update(tab.evaluate(COMPARE, max(images // 3, 1)))
        result |= tab.evaluate(ATTENTION, [unet_calls, images])
        result["first_pictures_ms"] = first_pictures_ms
        version = browser.version
        browser.close()
    if errors:
        raise RuntimeError(f"the page failed: {errors}")
    return {**result, "chromium": version}


def in_torch(unet_calls: int, images: int) -> dict:
    """The same measurements with PyTorch on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = load_pipeline(DEFAULT_MODEL, device="cpu", dtype=torch.float32)
        context = pipe.encode_prompts([PROMPT, PROMPT])  # (2, T, D)
        x, t = torch.full((2, 4, 8, 8), 0.5), torch.tensor([500.0, 500.0])
        calls = []
        with torch.no_grad():
            for k in range(unet_calls + 3):
                start = time.perf_counter()
                pipe.unet(x, t, context)
                if k >= 3:
                    calls.append(time.perf_counter() - start)
        image_s = []
        for k in range(images + 1):
            start = time.perf_counter()
            pipe(PROMPT, steps=20, guidance=7.5, seed=0, progress=False)
            if k >= 1:
                image_s.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return {
        "unet_ms": 1000 * statistics.median(calls),
        "image_ms": 1000 * statistics.median(image_s),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (for tests)")
    parser.add_argument("--busy", type=int, default=0, help="busy processes beside")
    parser.add_argument("--live", type=Path, help="an export of minsd.live to reuse")
    args = parser.parse_args()
    unet_calls, images = (5, 2) if args.quick else (50, 10)
    with tempfile.TemporaryDirectory() as folder:
        page, settings = prepare(Path(folder), args.live)
        weight = page_weight(Path(folder) / "_live", settings)
        busy = busy_processes(args.busy)
        try:
            time.sleep(1 if busy else 0)
            load = os.getloadavg()[0]
            browser = in_browser(page, unet_calls, images)
        finally:
            for process in busy:
                process.kill()
                process.wait()
    python = in_torch(unet_calls, images)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.busy} busy processes beside, load average {load:.1f}; Chromium "
        f"{browser['chromium']}, torch {torch.__version__}, python "
        f"{sys.version.split()[0]}"
    )
    print("| | browser (ORT Web, 1 wasm thread) | torch (1 thread) |")
    print("|---|---|---|")
    print(
        f"| ms per UNet call (batch 2) | {browser['unet_ms']:.1f} | "
        f"{python['unet_ms']:.1f} |"
    )
    print(
        f"| ms per image (20 Euler steps, g = 7.5, decode) | {browser['image_ms']:.0f} "
        f"(min {browser['image_min_ms']:.0f}, max {browser['image_max_ms']:.0f}) | "
        f"{python['image_ms']:.0f} |"
    )
    print(
        "| ms per comparison, two columns of 20 steps (Euler, DPM++ 2M: 40 NFE) | "
        f"{browser['compare_ms']:.0f} | |"
    )
    print(
        "| ms per comparison with a new g (the columns, then a 100-step reference) | "
        f"{browser['compare_reference_ms']:.0f} | |"
    )
    print(f"| first load (runtime + model), ms | {browser['load_ms']:.0f} | |")
    print(
        f"| the {len(WIDGETS)} widgets' first pictures, ms after navigation | "
        f"{browser['first_pictures_ms']:.0f} | |"
    )
    print(
        f"| attention: its first picture alone, ms | "
        f"{browser['attention_first_ms']:.0f} | |"
    )
    print(
        f"| attention: ms per UNet call with its maps (batch 2) | "
        f"{browser['unet_maps_ms']:.1f} | |"
    )
    print(
        f"| attention: ms per run (20 steps and their maps, drawn) | "
        f"{browser['run_ms']:.0f} (min {browser['run_min_ms']:.0f}, max "
        f"{browser['run_max_ms']:.0f}) | |"
    )
    (load_raw, load_zip), (run_raw, run_zip) = weight["on_load"], weight["on_run"]
    print(
        f"page weight added: {(load_raw + run_raw) / 1e6:.1f} MB, "
        f"{(load_zip + run_zip) / 1e6:.1f} MB gzipped"
    )
    print(
        f"of which on load (scripts, stylesheet, the {len(WIDGETS)} pages' settings and "
        f"first results): {load_raw / 1e3:.0f} kB, {load_zip / 1e3:.0f} kB gzipped"
    )
    target = "met" if browser["image_ms"] <= 1000 else "NOT met"
    print(f"target (an image in at most 1 s in the browser): {target}")


if __name__ == "__main__":
    main()
