"""The default model in the reader's browser: ms per UNet call in headless Chromium (ONNX
Runtime Web, one WebAssembly thread) beside torch's (one thread) on the same model, the
time of a guided 20-step Euler image in the page, and the page weight the live widgets
add.

    python benchmarks/browser.py [--quick] [--live DIR]

It exports the model as the book build does (minsd.live; --live reuses a built book's
_build/html/_live folder instead), opens a bare page with the widgets' scripts from
file:// in /usr/bin/chromium, and times there: the first load (runtime and model),
UNet calls at batch 2 (uncond + cond), and whole images (20 Euler steps with guidance
7.5, then the VAE decoder), each the median of several runs after a warm-up. The
target is at most 1 s per image on a 2-core machine.
"""

import argparse
import gzip
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from minsd import live
from minsd.loading import DEFAULT_MODEL, load_pipeline

ROOT = Path(__file__).resolve().parents[1]
LIVE = ROOT / "book" / "live"
SCRIPTS = ("denoiser.js", "scheduler.js", "toy.js", "pipeline.js", "runtime.js")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PROMPT = "a blue circle on a white background"

MEASURE = """async ([unet_calls, images]) => {
  const median = (v) => v.slice().sort((a, b) => a - b)[Math.floor(v.length / 2)];
  const t0 = performance.now();
  const model = await minsd.runtime.load();
  const load_ms = performance.now() - t0;
  const x = new Float32Array(2 * 4 * 8 * 8).fill(0.5);
  const t = new Float32Array([500, 500]);
  const context = model.data.embedding("%PROMPT%");
  const both = new Float32Array(2 * context.length);
  both.set(context); both.set(context, context.length);
  const calls = [];
  for (let k = 0; k < unet_calls + 3; k++) {
    const s = performance.now();
    await model.unet(x, t, both);
    if (k >= 3) calls.push(performance.now() - s);
  }
  const options = {prompt: "%PROMPT%", steps: 20, guidance: 7.5, seed: 0,
                   sampler: "euler", spacing: "linspace"};
  const image_ms = [];
  for (let k = 0; k < images + 1; k++) {
    const s = performance.now();
    await minsd.pipeline.generate(model, options);
    if (k >= 1) image_ms.push(performance.now() - s);
  }
  return {load_ms, unet_ms: median(calls), image_ms: median(image_ms),
          image_min_ms: Math.min(...image_ms), image_max_ms: Math.max(...image_ms)};
}""".replace("%PROMPT%", PROMPT)


def prepare(folder: Path, live_folder: Path | None) -> Path:
    """The page's files in folder/_live and a bare page that loads the scripts."""
    out = folder / "_live"
    if live_folder is not None:
        shutil.copytree(live_folder, out)
    else:
        live.export(out)
        live.write_runtime(LIVE / "node_modules" / "onnxruntime-web" / "dist", out)
    for name in SCRIPTS:
        shutil.copyfile(LIVE / name, out / name)
    tags = "".join(f'<script src="_live/{name}"></script>' for name in SCRIPTS)
    page = folder / "index.html"
    page.write_text(f"<!doctype html><meta charset='utf-8'><title>bench</title>{tags}")
    return page


def page_weight(out: Path) -> tuple[float, float]:
    """MB and MB gzipped of what a widget page loads: the scripts, then on Run the
    runtime, data and networks."""
    names = [*SCRIPTS, "widgets.js", "live.css"]
    names += [f"{n}.js" for n in (*live.RUNTIME, live.DATA, *live.NETWORKS)]
    raw = zipped = 0
    for name in names:
        path = out / name if (out / name).is_file() else LIVE / name
        data = path.read_bytes()
        raw += len(data)
        zipped += len(gzip.compress(data, compresslevel=6))
    return raw / 1e6, zipped / 1e6


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
        result = tab.evaluate(MEASURE, [unet_calls, images])
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
    parser.add_argument("--live", type=Path, help="a built book's _build/html/_live")
    args = parser.parse_args()
    unet_calls, images = (5, 2) if args.quick else (50, 10)
    with tempfile.TemporaryDirectory() as folder:
        page = prepare(Path(folder), args.live)
        weight = page_weight(Path(folder) / "_live")
        browser = in_browser(page, unet_calls, images)
    python = in_torch(unet_calls, images)
    load = os.getloadavg()[0]
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load:.1f}; Chromium {browser['chromium']}, torch "
        f"{torch.__version__}, python {sys.version.split()[0]}"
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
    print(f"| first load (runtime + model), ms | {browser['load_ms']:.0f} | |")
    print(f"page weight added: {weight[0]:.1f} MB, {weight[1]:.1f} MB gzipped")
    target = "met" if browser["image_ms"] <= 1000 else "NOT met"
    print(f"target (an image in at most 1 s in the browser): {target}")


if __name__ == "__main__":
    main()
