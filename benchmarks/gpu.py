"""diffusers vs minsd on a GPU, eager and compiled, each variant in a fresh process, on
identical random SD 1.5 weights.

On a GPU machine that has only this repository, torch and transformers (diffusers' wheel
is in the repository's gitignored .whl/ folder):

    pip install --no-deps .whl/diffusers-0.42.1-*.whl
    cd benchmarks && PYTHONPATH=.. python gpu.py --out results/gpu_run.md

    python gpu.py --variants minsd-eager minsd-compiled --batches 1    # a subset,
    for a short slot python gpu.py --smoke [--no-compile]    # a tiny config on any
    machine, CPU included (the tests run it)

Setup: SD 1.5's UNet, CLIP ViT-L/14 text tower and VAE with random weights (seeded: the
same in every process and for both libraries), fp16, 512 x 512, 20 Euler steps, guidance
7.5. Batch B is B images of one prompt, so the UNet runs at batch 2B. diffusers is
handed minsd's starting noise.

Variants: diffusers and minsd, each eager and compiled; every (variant, batch) runs in a
Python process of its own, so peak memory and compile caches (inductor's and triton's on
disk too) start empty. "compiled" is one recipe for both libraries, minsd's
`compile_unet` on CUDA: channels_last, then torch.compile(unet, mode="reduce-overhead",
fullgraph=True, dynamic=False), i.e. CUDA graphs. On a CPU, the compiled variants and
the sync counts are skipped (--compile runs the compiled ones).

  it/s        UNet evaluations per second of the denoising loop, (N - 1) / (t(N steps)
  - t(1 step)):
              text encoding and VAE decoding cancel. Medians over --repeats runs.
  s / image   median seconds of a generation at N steps (prompt to pixels on the CPU),
  divided by B. TFLOP/s     FLOPs of one guided UNet evaluation (batch 2B, 64 x 64
  latents, 77 tokens, counted on the
              meta device by torch.utils.flop_counter) x it/s; % of peak:
              of the card's dense fp16 tensor peak.
  peak GiB    torch.cuda.max_memory_allocated() in the variant's process, from just
  after loading: the
              weights (UNet, VAE, text encoder) plus the most that
              compiling and generating added.
  reserved    torch.cuda.max_memory_reserved(): the allocator's pools, CUDA graph
  pools included. syncs/step  synchronizing CUDA calls per denoising step, as
  torch.cuda.set_sync_debug_mode("warn")
              flags them: (count(N) - count(1)) / (N - 1); the report
              names the top 3 source lines.
  compile s   the first generation after torch.compile: tracing, inductor, CUDA graph
  capture and the run.
Then the correctness lines: compiled vs eager images of each library, and minsd vs
diffusers (eager).

The full run is 8 processes, each loading the weights; the 4 compiled ones compile once
each (minsd's compile and first run took 60 s on an H100 before). Progress goes to
stderr with timestamps; the report to stdout and, with --out, to a file that is
rewritten after every process, so a run cut short keeps what it measured. --time-limit
(default 540 s) stops, or never starts, processes that would overrun it.
"""

import argparse
import contextlib
import gc
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

# The run's clock, for the log: a fresh process for a variant continues its parent's.
START = float(os.environ.get("GPU_BENCHMARK_START", time.time()))

import torch  # noqa: E402

# minsd, where it is not installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    TINY,
    cpu_name,
    diffusers_pixels,
    minsd_pixels,
    pipeline_pair,
    sync,
    table,
    unet_flops,
)

from minsd.speed import recommended_num_threads  # noqa: E402
from minsd.unet import UNetConfig  # noqa: E402

VARIANTS = ("diffusers-eager", "minsd-eager", "diffusers-compiled", "minsd-compiled")
PROMPT = "a photograph of an astronaut riding a horse"
RECIPE = (
    'unet.to(memory_format=torch.channels_last); torch.compile(unet, mode="reduce-overhead", fullgraph=True, '
    "dynamic=False)"
)
# the warning of torch.cuda.set_sync_debug_mode("warn")
SYNC_MESSAGE = "called a synchronizing CUDA operation"

# Dense (no sparsity) fp16 tensor-core peaks in TFLOP/s, from NVIDIA's datasheets. The
# first pattern found in torch.cuda.get_device_name() wins: "NVIDIA H100 80GB HBM3" is
# the SXM card; "L4" must not match "L40S".
PEAK_TFLOPS = (
    (r"H100 PCIe", 756.0),
    (r"H100 NVL|H200 NVL", 835.5),
    (r"H100|H200", 989.4),
    (r"A100", 312.0),
    (r"\bL4\b", 121.0),
)


def log(message: str) -> None:
    print(
        f"[{time.strftime('%H:%M:%S')} +{time.time() - START:4.0f} s] {message}",
        file=sys.stderr,
        flush=True,
    )


def peak_tflops(device_name: str) -> float | None:
    for pattern, tflops in PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return tflops
    return None


def compiled_unet(unet: torch.nn.Module, fullgraph: bool = True) -> torch.nn.Module:
    """The compiled recipe, the same for either library's UNet: minsd's `compile_unet`
    on CUDA, line for line."""
    unet.to(memory_format=torch.channels_last)
    return torch.compile(
        unet, mode="reduce-overhead", fullgraph=fullgraph, dynamic=False
    )


# -- one variant, in its own process ------------------------------------------------------------------------


def load(
    library: str,
    cfg: UNetConfig,
    device: torch.device,
    dtype: torch.dtype,
    tiny_parts: bool,
):
    """One library's pipeline. Both are built (minsd's UNet copies diffusers' weights);
    the other is dropped here."""
    reference, pipe = pipeline_pair(cfg, device, dtype, tiny_parts=tiny_parts)
    return reference if library == "diffusers" else pipe


def timed_generation(
    generate, n: int, device: torch.device
) -> tuple[float, torch.Tensor]:
    sync(device)
    start = time.perf_counter()
    pixels = generate(n)
    sync(device)
    return time.perf_counter() - start, pixels


def short_path(filename: str) -> str:
    """A source file from its package down (diffusers/..., torch/...), or from the
    repository's root."""
    parts = Path(filename).parts
    for packages in ("site-packages", "dist-packages"):
        if packages in parts:
            last = len(parts) - 1 - parts[::-1].index(packages)
            return "/".join(parts[last + 1 :])
    try:  # "<string>" and other names that are no file stay as they are
        return str(Path(filename).relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return filename


def sync_sites(generate, n: int) -> list[str]:
    """The synchronizing CUDA calls of one generation at n steps: the "file:line" that
    made each (CUDA only)."""
    torch.cuda.set_sync_debug_mode("warn")  # a UserWarning at every synchronizing call
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            generate(n)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return [
        f"{short_path(w.filename)}:{w.lineno}"
        for w in caught
        if SYNC_MESSAGE in str(w.message)
    ]


def syncs_per_step(
    at_n: list[str], at_1: list[str], n: int
) -> tuple[float, list[tuple[str, float]]]:
    """(count(N) - count(1)) / (N - 1) over all sites, and per site for the sites
    whose count grows with N
    (most first): the syncs inside the denoising loop, without those of text
    encoding and decoding."""
    count_n, count_1 = Counter(at_n), Counter(at_1)
    per_site = [(site, (count_n[site] - count_1[site]) / (n - 1)) for site in count_n]
    growing = sorted((s for s in per_site if s[1] > 0), key=lambda s: -s[1])
    return (len(at_n) - len(at_1)) / (n - 1), growing


def measure_variant(
    variant: str,
    batch: int,
    smoke: bool,
    size: int,
    steps: int,
    repeats: int,
    count_syncs: bool,
    workdir: str,
) -> dict:
    """Load one library's pipeline, compile its UNet if asked, and time it at one batch
    size."""
    library, mode = variant.split("-")
    tag = f"{library} {mode}, batch {batch}"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    cfg = TINY if smoke else UNetConfig()
    result = {
        "variant": variant,
        "batch": batch,
        "torch": torch.__version__,
        "notes": [],
    }
    result["device"] = torch.cuda.get_device_name() if cuda else f"CPU: {cpu_name()}"

    log(f"{tag}: building the pipeline (random weights)")
    pipeline = load(library, cfg, device, dtype, tiny_parts=smoke)
    gc.collect()
    # minsd's advice for this UNet's size, for both libraries: one thread for a
    # tiny one
    if not cuda:
        torch.set_num_threads(recommended_num_threads(pipeline.unet))
    result["weights"] = sum(
        p.numel() * p.element_size()
        for part in (pipeline.unet, pipeline.vae, pipeline.text_encoder)
        for p in part.parameters()
    )
    # minsd draws fp32 noise from a seeded CPU generator; diffusers would draw
    # other numbers in fp16: hand it these.
    noise = torch.randn(
        (batch, cfg.in_channels, size // 8, size // 8),
        generator=torch.Generator("cpu").manual_seed(0),
    )
    latents = noise.to(device, dtype)

    def generate(n: int) -> torch.Tensor:
        """`batch` images of PROMPT at n steps: (B, 3, H, W) pixels in [0, 1], float32
        on the CPU."""
        if library == "diffusers":
            return (
                diffusers_pixels(
                    pipeline, PROMPT, n, size, latents=latents, num_images=batch
                )
                .float()
                .cpu()
            )
        return minsd_pixels(pipeline, PROMPT, n, size, num_images=batch)

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        # the peak starts at what is allocated now: the weights
        torch.cuda.reset_peak_memory_stats()
        leftover = torch.cuda.memory_allocated() - result["weights"]
        # the other library's UNet, say, would inflate the peak
        if leftover > 0.01 * result["weights"]:
            result["notes"].append(
                f"{leftover / 2**30:.2f} GiB beyond the weights stayed allocated after loading"
            )

    with torch.no_grad():
        if mode == "compiled":
            # whose .unet the loop calls
            holder = pipeline if library == "diffusers" else pipeline.denoiser
            eager_unet = holder.unet
            holder.unet = compiled_unet(eager_unet, fullgraph=True)
            result["fullgraph"] = True
            log(f"{tag}: compiling (the first generation at {steps} steps)")
            start = time.perf_counter()
            try:
                generate(steps)
            except Exception as err:
                if library != "diffusers":
                    raise
                traceback.print_exc()
                first_line = (str(err).strip().splitlines() or [""])[0][:200]
                note = (
                    f"diffusers' UNet failed with fullgraph=True after {time.perf_counter() - start:.0f} s "
                    f"({type(err).__name__}: {first_line}); compiled again with fullgraph=False"
                )
                result["notes"].append(note)
                log(f"{tag}: {note}")
                torch._dynamo.reset()
                holder.unet = compiled_unet(eager_unet, fullgraph=False)
                result["fullgraph"] = False
                start = time.perf_counter()
                generate(steps)
            result["compile_s"] = time.perf_counter() - start
            log(f"{tag}: compiled and ran in {result['compile_s']:.1f} s")
        else:
            generate(steps)  # warm-up
        generate(1)

        log(f"{tag}: timing {repeats} x ({steps} steps, 1 step)")
        full, single = [], []
        for _ in range(repeats):
            seconds, pixels = timed_generation(generate, steps, device)
            full.append(seconds)
            single.append(timed_generation(generate, 1, device)[0])
        result["t_full"], result["t_single"] = full, single
        t_full, t_single = statistics.median(full), statistics.median(single)
        result["s_per_image"] = t_full / batch
        if t_full > t_single:
            result["it_s"] = (steps - 1) / (t_full - t_single)
        # only on a busy machine with a tiny model: the loop's time is lost in
        # the noise
        else:
            result["notes"].append(
                f"it/s not measurable: t({steps} steps) {t_full:.3f} s <= t(1 step) {t_single:.3f} s"
            )
        if cuda:
            result["peak"] = torch.cuda.max_memory_allocated()
            result["reserved"] = torch.cuda.max_memory_reserved()
        result["finite"] = bool(torch.isfinite(pixels).all())
        result["pixels"] = str(Path(workdir) / f"{variant}-b{batch}.pt")
        torch.save(pixels, result["pixels"])
        log(
            f"{tag}: {result.get('it_s', float('nan')):.2f} it/s, {result['s_per_image']:.3f} s / image"
        )
        # did the recipe give one graph, replayed as a CUDA graph?
        if mode == "compiled":
            from torch._dynamo.utils import counters

            graphs, skips = (
                counters["stats"]["unique_graphs"],
                counters["inductor"]["cudagraph_skips"],
            )
            result["notes"].append(
                f"{graphs} graph(s) compiled; CUDA graphs skipped {skips} time(s)"
                + ("" if cuda else " (always, on a CPU)")
                + (
                    ""
                    if graphs == 1 and (skips == 0 or not cuda)
                    else ": see the log for why"
                )
            )

        if count_syncs:
            try:
                at_n, at_1 = sync_sites(generate, steps), sync_sites(generate, 1)
                result["syncs_per_step"], result["sync_sources"] = syncs_per_step(
                    at_n, at_1, steps
                )
                result["syncs_at_1_step"] = len(at_1)
                log(
                    f"{tag}: {result['syncs_per_step']:.2f} syncs per step, {len(at_1)} in a 1-step generation"
                )
            except Exception as err:
                traceback.print_exc()
                result["syncs_error"] = f"{type(err).__name__}: {err}"[:300]
    return result


def child_main(spec: dict) -> None:
    """The fresh process's side: measure one variant and write its result (or its error)
    as JSON."""
    result_path = Path(spec.pop("result"))
    try:
        if spec["variant"].endswith("compiled"):
            # a recompilation inside the loop would show in the timings
            torch._logging.set_logs(recompiles=True)
        result = measure_variant(**spec)
    except Exception as err:
        traceback.print_exc()
        result = {"error": f"{type(err).__name__}: {err}"[:500]}
    result_path.write_text(json.dumps(result))


# -- the parent: one fresh process per variant and batch, then the report ----------------------------------------


def kill_group(process: subprocess.Popen) -> None:
    """End a child started in its own session, and whatever it started (inductor's
    compile workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_in_fresh_process(spec: dict, timeout: float, workdir: Path) -> dict:
    """measure_variant(**spec) in a new Python process with its own compile caches: its
    result, or what went wrong."""
    name = f"{spec['variant']}-b{spec['batch']}"
    result_path = workdir / f"{name}.json"
    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": str(workdir / name / "inductor"),
        "TRITON_CACHE_DIR": str(workdir / name / "triton"),
        "GPU_BENCHMARK_START": str(START),
    }
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        json.dumps({**spec, "result": str(result_path)}),
    ]
    # Its own session, so that a timeout also ends its compile workers; its stdout
    # joins our stderr (the log).
    process = subprocess.Popen(
        command, stdout=sys.stderr, env=env, start_new_session=True
    )
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        return {
            "error": f"stopped after {timeout:.0f} s: it would have overrun --time-limit",
            "status": "stopped",
        }
    except BaseException:  # Ctrl-C: take the child down with us
        kill_group(process)
        raise
    if result_path.exists():
        return json.loads(result_path.read_text())
    return {
        "error": f"its process exited with code {process.returncode} before writing a result (see the log)"
    }


def nvidia_smi() -> str:
    """The driver, power limit and top SM clock, as nvidia-smi reports them ("" if it
    cannot)."""
    query = "--query-gpu=driver_version,power.limit,clocks.max.sm"
    try:
        out = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        driver, power, clock = out.stdout.strip().splitlines()[0].split(", ")
        return f"driver {driver}, power limit {power}, max SM clock {clock}"
    except Exception:
        return ""


def gib(n_bytes: int | None) -> str:
    return f"{n_bytes / 2**30:.2f}" if n_bytes is not None else "-"


def variant_label(variant: str) -> str:
    return variant.replace("-", " ")


def versions() -> str:
    found = []
    for package in ("diffusers", "transformers"):
        try:
            found.append(f"{package} {__import__(package).__version__}")
        except Exception:
            found.append(f"{package} not importable here")
    return ", ".join(found)


def pixel_difference(a: dict, b: dict) -> str:
    """max and mean |a - b| over the pixels (in [0, 1]) of two variants' last images."""
    if "pixels" not in a or "pixels" not in b:
        return "not measured (a variant failed or did not run)"
    pa, pb = torch.load(a["pixels"]), torch.load(b["pixels"])
    difference = (pa - pb).abs()
    return f"max {difference.max().item():.2e}, mean {difference.mean().item():.2e}"


def report(
    args, plan: list, results: dict, flops: dict, setup: dict, skipped: list[str]
) -> str:
    """The Markdown report of the runs done so far."""
    done = [r for r in results.values() if "error" not in r]
    device = done[0]["device"] if done else "no variant finished"
    peak = peak_tflops(device) if done and not device.startswith("CPU") else None
    lines = []
    if len(results) < len(plan):
        lines += [
            f"**Partial report: {len(results)} of {len(plan)} runs done so far.**",
            "",
        ]
    smi = setup["nvidia-smi"]
    lines.append(
        f"Device: {device}"
        + (f" ({smi})" if smi else "")
        + "; dense fp16 tensor peak: "
        + (f"{peak} TFLOP/s." if peak else "unknown peak.")
        + f" torch {torch.__version__} (CUDA {torch.version.cuda}), {versions()}."
    )
    lines.append(
        f"Setup: {setup['models']}, random weights (seeded, identical in every process and for both libraries); "
        f"{args.size} x {args.size} px, {args.steps} Euler steps, guidance 7.5; batch B = B images of one "
        f"prompt (UNet batch 2B); each (variant, batch) in a fresh process; medians of {args.repeats} runs."
    )
    lines.append(
        f"Compiled, both libraries (minsd's `compile_unet` on CUDA): `{RECIPE}` (CUDA graphs); the VAE and text "
        "encoder stay eager; each process starts with empty inductor and triton caches."
    )
    weights = f"{done[0]['weights'] / 2**30:.2f} GiB" if done else "?"
    flop_text = (
        ", ".join(f"{flops[b] / 1e12:.3g} TFLOP at batch {b}" for b in sorted(flops))
        or "not counted"
    )
    lines.append(
        f"it/s: UNet evaluations per second, (N - 1) / (t(N) - t(1)). s / image: seconds per generation "
        f"(prompt to pixels on the CPU) / B. TFLOP/s: FLOPs of one guided UNet evaluation ({flop_text}) x it/s. "
        f"peak GiB: torch.cuda.max_memory_allocated() in the variant's process from just after loading, "
        f"weights included ({weights}: UNet, VAE, text encoder); reserved GiB: max_memory_reserved() (the "
        "allocator's pools, CUDA graph pools included; not the CUDA context). syncs/step: synchronizing CUDA "
        'calls that torch.cuda.set_sync_debug_mode("warn") flags, (count(N) - count(1)) / (N - 1). compile s: '
        "the first generation after torch.compile (tracing, inductor, CUDA graph capture, and the run)."
    )
    lines.append("")

    rows = []
    for variant, batch in plan:
        r = results.get((variant, batch))
        label = variant_label(variant)
        if r is not None and r.get("fullgraph") is False:
            label += " (fullgraph=False)"
        if r is None or "error" in r:
            rows.append(
                [
                    label,
                    batch,
                    "not run" if r is None else r.get("status", "failed"),
                    *["-"] * 8,
                ]
            )
            continue
        base = results.get(("diffusers-eager", batch), {})
        it_s = r.get("it_s")
        tflops = flops[batch] * it_s / 1e12 if batch in flops and it_s else None
        rows.append(
            [
                label,
                batch,
                f"{it_s:.1f}" if it_s else "-",
                f"{it_s / base['it_s']:.2f}" if it_s and "it_s" in base else "-",
                f"{r['s_per_image']:.3f}",
                f"{tflops:.1f}" if tflops is not None else "-",
                f"{100 * tflops / peak:.1f}" if tflops is not None and peak else "-",
                gib(r.get("peak")),
                gib(r.get("reserved")),
                f"{r['syncs_per_step']:.2f}" if "syncs_per_step" in r else "-",
                f"{r['compile_s']:.0f}" if "compile_s" in r else "-",
            ]
        )
    header = [
        "variant",
        "batch",
        "it/s",
        "vs diffusers eager",
        "s / image",
        "TFLOP/s",
        "% of peak",
    ]
    lines.append(
        table(rows, [*header, "peak GiB", "reserved GiB", "syncs/step", "compile s"])
    )

    lines += ["", "Correctness, the last image of each variant (pixels in [0, 1]):", ""]
    for batch in sorted({b for _, b in plan}):
        of_batch = {variant: results.get((variant, batch), {}) for variant in VARIANTS}
        lines.append(
            f"- batch {batch}: max |minsd - diffusers| pixel difference (eager, same noise): "
            + pixel_difference(of_batch["minsd-eager"], of_batch["diffusers-eager"])
        )
        for library in ("diffusers", "minsd"):
            if (f"{library}-compiled", batch) in plan:
                lines.append(
                    f"- batch {batch}: {library} compiled vs eager: "
                    + pixel_difference(
                        of_batch[f"{library}-compiled"], of_batch[f"{library}-eager"]
                    )
                )
    not_finite = [
        f"{variant_label(v)}, batch {b}"
        for (v, b), r in results.items()
        if r.get("finite") is False
    ]
    if not_finite:
        lines.append(f"- NaN or inf pixels in: {'; '.join(not_finite)}")

    sources = []
    for (variant, batch), r in results.items():
        if "syncs_per_step" in r:
            top = (
                ", ".join(
                    f"{site} ({rate:.2f})" for site, rate in r["sync_sources"][:3]
                )
                or "none"
            )
            sources.append(
                f"- {variant_label(variant)}, batch {batch}: {r['syncs_per_step']:.2f} per step, from {top}; "
                f"{r['syncs_at_1_step']} in a whole 1-step generation"
            )
        elif "syncs_error" in r:
            sources.append(
                f"- {variant_label(variant)}, batch {batch}: counting failed: {r['syncs_error']}"
            )
    if sources:
        lines += [
            "",
            "Where the syncs of the loop come from (file:line, syncs per step; top 3):",
            "",
            *sources,
        ]

    notes = [
        f"- {variant_label(v)}, batch {b}: {note}"
        for (v, b), r in results.items()
        for note in r.get("notes", [])
    ]
    notes += [
        f"- {variant_label(v)}, batch {b}: {r['error']}"
        for (v, b), r in results.items()
        if "error" in r
    ]
    notes += [f"- {line}" for line in skipped]
    if notes:
        lines += ["", "Notes and failures:", "", *notes]
    return "\n".join(lines)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny config (64 px, 3 steps, 2 repeats), on any device",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        metavar="VARIANT",
    )
    p.add_argument(
        "--batches",
        nargs="+",
        type=int,
        default=[1, 4],
        help="images per generation (default: 1 4)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="denoising steps (default 20; 3 with --smoke)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="image size in pixels (default 512; 64 with --smoke)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per variant (default 3; 2 with --smoke)",
    )
    p.add_argument(
        "--no-compile", action="store_true", help="skip the compiled variants"
    )
    p.add_argument(
        "--compile", action="store_true", help="run the compiled variants on a CPU too"
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=540,
        help="seconds for the whole run (default 540)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="also write the report (Markdown) here"
    )
    # internal: one variant, in a fresh process
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.steps = args.steps or (3 if args.smoke else 20)
    args.size = args.size or (64 if args.smoke else 512)
    args.repeats = args.repeats or (2 if args.smoke else 3)
    if args.steps < 2:
        p.error(
            f"--steps must be at least 2 (it/s compares N steps with 1 step), got {args.steps}"
        )
    if args.size % 8:
        p.error(f"--size must be a multiple of 8 (the VAE's factor), got {args.size}")
    if any(b < 1 for b in args.batches):
        p.error(f"--batches must be positive, got {args.batches}")
    return args


def write_report(args, text: str) -> None:
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


def main() -> None:
    args = parse_args()
    if args.child:
        return child_main(json.loads(args.child))
    # no CUDA context in this process: the children report the device
    cuda = torch.cuda.is_available()
    cfg = TINY if args.smoke else UNetConfig()
    models = (
        "tiny UNet, text encoder and VAE (--smoke)"
        if args.smoke
        else "SD 1.5 UNet, CLIP ViT-L/14, VAE"
    )
    setup = {
        "models": f"{models}, {'float16' if cuda else 'float32'}",
        "nvidia-smi": nvidia_smi() if cuda else "",
    }

    skipped, variants = [], []
    for variant in dict.fromkeys(args.variants):
        if variant.endswith("compiled") and args.no_compile:
            skipped.append(f"{variant_label(variant)}: skipped (--no-compile)")
        elif variant.endswith("compiled") and not cuda and not args.compile:
            skipped.append(
                f"{variant_label(variant)}: skipped on the CPU (--compile runs it)"
            )
        else:
            variants.append(variant)
    if not cuda:
        skipped.append(
            "syncs/step: not counted on the CPU (torch.cuda.set_sync_debug_mode needs CUDA)"
        )
    plan = [
        (variant, batch)
        for batch in dict.fromkeys(args.batches)
        for variant in variants
    ]

    flops = {}
    for batch in dict.fromkeys(args.batches):
        try:
            flops[batch] = sum(
                unet_flops(cfg, args.size // 8, batch=2 * batch).values()
            )
        except Exception as err:
            log(
                f"counting the UNet's FLOPs at batch {batch} failed: {type(err).__name__}: {err}"
            )
    log(
        f"plan: {', '.join(f'{v} b{b}' for v, b in plan)}; time limit {args.time_limit:.0f} s"
    )

    results = {}
    deadline = START + args.time_limit
    with tempfile.TemporaryDirectory(prefix="minsd-gpu-benchmark-") as workdir:
        for variant, batch in plan:
            remaining = deadline - time.time()
            if remaining < 30:
                results[(variant, batch)] = {
                    "error": "less than 30 s left of --time-limit",
                    "status": "not run",
                }
                log(f"{variant} b{batch}: not started, out of time")
            else:
                spec = {
                    "variant": variant,
                    "batch": batch,
                    "smoke": args.smoke,
                    "size": args.size,
                }
                spec |= {
                    "steps": args.steps,
                    "repeats": args.repeats,
                    "count_syncs": cuda,
                    "workdir": workdir,
                }
                started = time.time()
                results[(variant, batch)] = run_in_fresh_process(
                    spec, remaining, Path(workdir)
                )
                outcome = results[(variant, batch)].get("error", "done")
                log(f"{variant} b{batch}: {outcome} ({time.time() - started:.0f} s)")
            write_report(args, report(args, plan, results, flops, setup, skipped))
        text = report(args, plan, results, flops, setup, skipped)
        write_report(args, text)
        print(text, flush=True)
    if args.out:
        log(f"report written to {args.out}")


if __name__ == "__main__":
    main()
