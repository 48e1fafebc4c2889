"""The default model for the reader's browser: ONNX files and the data the book's live
widgets read.

The rendered book samples with minsd's default model in the page, with ONNX Runtime Web
(WebAssembly) and a JavaScript sampler that mirrors scheduler.py (book/live/). The page
runs three networks, exported here from minsd's own modules with fixed shapes:

    unet.onnx         F_theta(x, t, context): x (2, C, h, w), t (2,), context (2, T, D);
                      batch 2 = the unconditional and the conditional half of guidance;
                      besides eps, the cross-attention probabilities of every attn2
                      layer, averaged over the heads (UNetWithMaps), for chapter 11
    vae_decoder.onnx  pipe.decode: latents (1, C, h, w) -> pixels (1, 3, H, W) in [0, 1]
    vae_encoder.onnx  pipe.encode: pixels (1, 3, H, W) in [0, 1] -> latents (1, C, h, w)

Each is run with onnxruntime beside PyTorch before it is written, and `export` raises
if any output differs by more than 1e-4. Everything the page needs besides is computed
here as `generate` computes it: the text embedding of every caption of the default
model's vocabulary and of the empty prompt (the page runs no text encoder), and the
starting noise n of every seed the page offers, drawn from torch's CPU generator.

Each widget also opens on a picture, before the reader loads anything: `first_results`
draws, with minsd, what the widget's Run would draw for its opening controls (the
`*_DEFAULTS` below), and the book build writes it into the pages' settings.

Every file is written as a classic script that stores its contents in
`globalThis.minsdLiveFiles[name]` (bytes as base64): Chromium refuses to fetch files or
import modules from a page opened from disk (file://), but runs classic scripts, so
one loading path serves both a file and a server.
"""

import base64
import functools
import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from . import toy
from .attention_maps import (
    cross_attention_layers,
    cross_attention_maps,
    recording_cross_attention,
)
from .book import rms
from .choices import SAMPLERS, SPACINGS
from .dataset import BACKGROUNDS, COLOURS, SHAPES, all_captions
from .denoiser import vp_coefficients
from .loading import DEFAULT_MODEL, load_pipeline
from .pipeline import StableDiffusion
from .preview import latents_to_rgb

# The largest difference allowed between onnxruntime's output and PyTorch's.
PARITY_TOLERANCE = 1e-4
# The seeds whose starting noise the page can use: 0 .. NUM_SEEDS - 1.
NUM_SEEDS = 100
OPSET = 17
# The names of the files `export` writes (each as NAME.js).
NETWORKS = ("unet.onnx", "vae_decoder.onnx", "vae_encoder.onnx")
DATA = "data.json"
# Plain JSON for the book build, which writes it into the pages (not a page's file).
FIRST_RESULTS = "first_results.json"
# From the npm package onnxruntime-web (its dist/ folder): the WebAssembly build as one
# ES module with its loader built in, and the binary it runs.
RUNTIME = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")
SCRIPT_START = "(globalThis.minsdLiveFiles ??= {})"
# The samplers the page runs: minsd.SAMPLERS but euler_ancestral, whose fresh noise at
# every step continues torch's generator (the page has only each seed's first draw).
PAGE_SAMPLERS = tuple(s for s in SAMPLERS if s != "euler_ancestral")
PAGE_SPACINGS = SPACINGS
# What each widget opens with (see first_results). The loop: chapter 7's settings,
# with the step slider at the middle of the loop.
LOOP_DEFAULTS = dict(
    prompt="a red circle on a black background",
    seed=0,
    steps=20,
    guidance=7.5,
    sampler="euler",
    spacing="linspace",
)
LOOP_STEP_SHOWN = 10
# Image to image: chapter 10's red circle and prompt, with its advice for an edit
# that keeps the drawing: guidance 1 and 50 steps at strength 0.05 (the last 2 steps,
# from sigma_k = 0.14; the circle turns blue from 0.08 on).
IMG2IMG_DEFAULTS = dict(
    prompt="a blue square on a black background",
    seed=0,
    steps=50,
    guidance=1.0,
    strength=0.05,
)
# The compare widget of chapter 9: two columns on one prompt and seed, minsd's default
# sampler beside the chapter's advice, each measured by its latent distance to a
# reference the page can afford (100 DPM++ 2M steps on the Karras schedule in float32,
# not the chapter's 512 in float64) for the same prompt, seed and guidance.
COMPARE_DEFAULTS = dict(
    prompt="a yellow triangle on a white background",
    seed=0,
    columns=[
        dict(sampler="euler", spacing="linspace", steps=20, guidance=7.5),
        dict(sampler="dpmpp_2m", spacing="karras", steps=20, guidance=7.5),
    ],
)
COMPARE_REFERENCE = dict(sampler="dpmpp_2m", spacing="karras", steps=100)
# The toy of chapter 2: the seeds of minsd.toy.starting_points the page offers, and the
# reference its mean error is measured against (Heun with this many steps).
TOY_SEEDS = 20
TOY_REFERENCE_STEPS = 400
# Chapter 11's maps: chapter 7's prompt, seed and settings, opening at the last step
# and the finest level.
ATTENTION_DEFAULTS = dict(LOOP_DEFAULTS)
ATTENTION_STEP_SHOWN = 19


class ParityError(RuntimeError):
    """An exported network differs from PyTorch by more than PARITY_TOLERANCE."""


class UNetWithMaps(nn.Module):
    """F_theta and its cross-attention maps in one call: (x, t, context) -> eps, then
    for every attn2 layer (in cross_attention_layers' order) the softmax over the T
    tokens at each of its N_l positions, averaged over the heads, (B, N_l, T), as
    recording_cross_attention records them. The loop's widgets read eps alone."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x, t, context) -> tuple[torch.Tensor, ...]:
        with recording_cross_attention(self.unet) as recorded:
            eps = self.unet(x, t, context)
        return (eps, *(calls[0] for calls in recorded.values()))


def unet_and_maps(unet: nn.Module, x, t, context) -> tuple[torch.Tensor, ...]:
    """What UNetWithMaps must equal: eps as generate computes it (the fused attention),
    and the maps as recording_cross_attention records them."""
    eps = unet(x, t, context)
    with recording_cross_attention(unet) as recorded:
        unet(x, t, context)
    return (eps, *(calls[0] for calls in recorded.values()))


class Decoder(nn.Module):
    """pipe.decode as one module: latents (B, C, h, w) -> pixels (B, 3, H, W) in
    [0, 1]."""

    def __init__(self, pipe: StableDiffusion) -> None:
        super().__init__()
        self.vae, self.scaling_factor = pipe.vae, pipe.vae.config.scaling_factor

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        pixels = self.vae.decode(latents / self.scaling_factor).sample
        return (pixels / 2 + 0.5).clamp(0, 1)


class Encoder(nn.Module):
    """pipe.encode as one module: pixels (B, 3, H, W) in [0, 1] -> the posterior mean
    times the scaling factor, (B, C, h, w)."""

    def __init__(self, pipe: StableDiffusion) -> None:
        super().__init__()
        self.vae, self.scaling_factor = pipe.vae, pipe.vae.config.scaling_factor

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        posterior = self.vae.encode(pixels * 2 - 1).latent_dist
        return posterior.mean * self.scaling_factor


def export(out: Path, num_seeds: int = NUM_SEEDS) -> dict:
    """Write the page's files into `out` (created if needed) and return the parity
    report: {network: max |onnxruntime - PyTorch|}.

    Always the default model, whatever $MINSD_WEIGHTS says: SD 1.5 is far too large
    for a page. Raises ParityError if an exported network differs from PyTorch by more
    than PARITY_TOLERANCE.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        pipe = load_pipeline(DEFAULT_MODEL, device="cpu", dtype=torch.float32)
        prompts = ["", *all_captions()]  # the empty prompt first: guidance's uncond
        embeddings = pipe.encode_prompts(prompts)  # (1 + 24, T, D)
        parity = {}
        for name, module, inputs, outputs, reference in networks(pipe, embeddings):
            onnx_bytes = to_onnx(module, inputs, outputs)
            parity[name] = max_difference(onnx_bytes, inputs, reference)
            if parity[name] > PARITY_TOLERANCE:
                raise ParityError(
                    f"{name}: onnxruntime differs from PyTorch by {parity[name]:.3g}, "
                    f"more than {PARITY_TOLERANCE:g}"
                )
            write_script(out / f"{name}.js", name, base64_text(onnx_bytes))
        data = page_data(pipe, prompts, embeddings, num_seeds, parity)
        write_script(out / f"{DATA}.js", DATA, data)
        first = first_results(pipe)
        (out / FIRST_RESULTS).write_text(json.dumps(first, separators=(",", ":")))
    return parity


def networks(pipe: StableDiffusion, embeddings: torch.Tensor) -> list[tuple]:
    """(file name, module, inputs, output names, reference) for each network: inputs
    like the page's, named as the ONNX file names them; the reference is the
    package's own function that the file must equal."""
    channels, size = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    generator = torch.Generator("cpu").manual_seed(0)
    sigma = torch.tensor([14.6, 0.9], dtype=torch.float64)  # one high, one low level
    noise = torch.randn(2, channels, size, size, generator=generator)
    x = sigma.float()[:, None, None, None] * noise  # x = sigma n
    c_in = vp_coefficients(sigma, pipe.denoiser.sigma_table)[2]  # (2,)
    x_in = c_in.float()[:, None, None, None] * x  # c_in x: what the UNet reads
    t = torch.tensor([999.0, 412.37])  # fractional, as the samplers give
    context = embeddings[[0, 5]]  # (2, T, D): uncond, one caption
    unet_inputs = {"x": x_in, "t": t, "context": context}
    latents = {"latents": torch.randn(1, channels, size, size, generator=generator)}
    H = pipe.default_size  # the image height and width: 32 pixels
    pixels = {"pixels": torch.rand(1, 3, H, H, generator=generator)}
    maps = [name for name, _ in cross_attention_layers(pipe.unet)]
    return [
        (
            "unet.onnx",
            UNetWithMaps(pipe.unet),
            unet_inputs,
            ["eps", *maps],
            functools.partial(unet_and_maps, pipe.unet),
        ),
        ("vae_decoder.onnx", Decoder(pipe), latents, ["pixels"], pipe.decode),
        ("vae_encoder.onnx", Encoder(pipe), pixels, ["latents"], pipe.encode),
    ]


def to_onnx(module: nn.Module, inputs: dict, outputs: list[str]) -> bytes:
    """The module traced with these inputs' (fixed) shapes, as ONNX bytes, weights
    inside."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The tracer's notes on diffusers' shape checks: true for the fixed shapes here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        torch.onnx.export(
            module.eval(),
            tuple(inputs.values()),
            buffer,
            input_names=list(inputs),
            output_names=outputs,
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter: needs only `onnx`
        )
    return buffer.getvalue()


def max_difference(onnx_bytes: bytes, inputs: dict, reference) -> float:
    """max |onnxruntime(inputs) - reference(inputs)| over the outputs' elements (a
    reference of several outputs returns a tuple, in the file's order)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        onnx_bytes, options, providers=["CPUExecutionProvider"]
    )
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    expected = reference(*inputs.values())
    expected = expected if isinstance(expected, tuple) else (expected,)
    if [g.shape for g in got] != [tuple(e.shape) for e in expected]:
        raise ParityError(
            f"ONNX outputs {[g.shape for g in got]}, PyTorch outputs "
            f"{[tuple(e.shape) for e in expected]}"
        )
    return max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))


def page_data(
    pipe: StableDiffusion,
    prompts: list[str],
    embeddings: torch.Tensor,
    num_seeds: int,
    parity: dict,
) -> dict:
    """What the page's sampler reads besides the networks (tensors as base64 float32,
    little-endian, row-major)."""
    channels, size = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    # generate's draw for one prompt and one image: shape (1, C, h, w)
    noise = torch.cat(
        [
            torch.randn(
                1, channels, size, size, generator=torch.Generator("cpu").manual_seed(s)
            )
            for s in range(num_seeds)
        ]
    )  # (num_seeds, C, h, w)
    schedule = json.loads(
        (DEFAULT_MODEL / "scheduler" / "scheduler_config.json").read_text()
    )
    return {
        "model": pipe.name,
        "image_size": pipe.default_size,
        "latent_shape": [channels, size, size],
        "text_shape": list(embeddings.shape[1:]),  # (T, D)
        "beta_start": schedule["beta_start"],
        "beta_end": schedule["beta_end"],
        "num_train_timesteps": schedule["num_train_timesteps"],
        "prompts": prompts,
        "embeddings": float32_base64(embeddings),  # (len(prompts), T, D)
        "num_seeds": num_seeds,
        "noise": float32_base64(noise),  # (num_seeds, C, h, w)
        "preview_factors": pipe.preview_factors.tolist(),  # (C, 3)
        "shapes": list(SHAPES),
        "colours": COLOURS,
        "backgrounds": BACKGROUNDS,
        "parity": parity,
    }


def first_results(pipe: StableDiffusion) -> dict:
    """What each widget shows before the reader runs anything, drawn by minsd with the
    widget's opening controls: {widget: settings}. Images are 8-bit, (3, H, W) each,
    as base64; the page draws them as they are.

    loop: generate(**LOOP_DEFAULTS); per step i, the preview of c_in x_i (what the
    UNet reads) and D(x_i; sigma_i) decoded, as the widget's step slider shows them.
    img2img: the drawing (chapter 10's red circle) and generate's result from it.
    toy: the starting points of chapter 2 for seeds 0 .. TOY_SEEDS - 1 (torch's
    generator, which the page cannot reproduce), float64.
    compare: see compare_first_result.
    attention: see attention_first_result.
    """
    table = pipe.denoiser.sigma_table
    loop = pipe.generate(**LOOP_DEFAULTS, return_steps=True, progress=False)
    # c_in x_i, eq. (3.4), with the schedule's float64 sigma_i
    x_in = torch.cat(
        [
            vp_coefficients(sigma, table)[2].float() * step["x"]
            for sigma, step in zip(loop.sigmas, loop.steps)
        ]
    )  # (N, C, h, w)
    previews = latents_to_rgb(x_in, pipe.preview_factors)  # (N, 3, h, w)
    decoded = pipe.decode(torch.cat([step["denoised"] for step in loop.steps]))
    drawing = hand_drawn_circle(pipe.default_size)  # (3, H, W) in [0, 1]
    edit = pipe.generate(init_image=drawing[None], **IMG2IMG_DEFAULTS, progress=False)
    points = torch.stack([toy.starting_points(seed) for seed in range(TOY_SEEDS)])
    return {
        "compare": compare_first_result(pipe),
        "loop": {
            "defaults": LOOP_DEFAULTS,
            "step": LOOP_STEP_SHOWN,
            "pixels": uint8_base64(loop.pixels[0]),  # (3, H, W)
            "previews": uint8_base64(previews),  # (N, 3, h, w)
            "decoded": uint8_base64(decoded),  # (N, 3, H, W)
        },
        "img2img": {
            "defaults": IMG2IMG_DEFAULTS,
            "drawing": uint8_base64(drawing),  # (3, H, W)
            "pixels": uint8_base64(edit.pixels[0]),  # (3, H, W)
        },
        "toy": {
            "num_seeds": TOY_SEEDS,
            "num_points": points.shape[1],
            "sigma_max": 20.0,  # toy.starting_points' default
            "reference_steps": TOY_REFERENCE_STEPS,
            "starting_points": float64_base64(points),  # (TOY_SEEDS, n, 2)
        },
        "attention": attention_first_result(pipe),
    }


def attention_first_result(pipe: StableDiffusion) -> dict:
    """Chapter 11's maps, cross_attention_maps(**ATTENTION_DEFAULTS): for each level
    but 1 x 1 (one position: no picture), its layers and the maps of every step,
    averaged over them as token_maps averages (float32); the image, and D(x_i;
    sigma_i) decoded at every step."""
    attention = cross_attention_maps(
        pipe, **ATTENTION_DEFAULTS, return_steps=True, progress=False
    )
    levels = {}  # (h_l, w_l) -> the layers that work at that size, finest first
    for name, maps in attention.maps.items():
        levels.setdefault(tuple(maps.shape[-2:]), []).append(name)
    steps = attention.generation.steps
    denoised = pipe.decode(torch.cat([step["denoised"] for step in steps]))
    return {
        "defaults": ATTENTION_DEFAULTS,
        "step": ATTENTION_STEP_SHOWN,
        "levels": [
            {
                "size": list(size),
                "layers": names,
                # (N, T, h_l, w_l): at each step i, the maps of its UNet call
                "maps": float32_base64(
                    torch.stack(
                        [
                            attention.token_maps(names, [i], size)
                            for i in range(len(steps))
                        ]
                    )
                ),
            }
            for size, names in levels.items()
            if size != (1, 1)
        ],
        "pixels": uint8_base64(attention.generation.pixels[0]),  # (3, H, W)
        "decoded": uint8_base64(denoised),  # (N, 3, H, W)
    }


def compare_run(
    pipe: StableDiffusion, prompt: str, seed: int, **column
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One column of the compare widget: generate's latents (1, C, h, w) and pixels
    (1, 3, H, W) for column's sampler, spacing, steps and guidance, and the number of
    denoiser evaluations (NFE) it spent, counted as the UNet's calls (one per
    D(x; sigma), guided or not)."""
    calls = []

    def count(module, inputs):
        calls.append(1)

    hook = pipe.unet.register_forward_pre_hook(count)
    try:
        result = pipe.generate(prompt, seed=seed, progress=False, **column)
    finally:
        hook.remove()
    return result.latents, result.pixels, len(calls)


def compare_reference(
    pipe: StableDiffusion, prompt: str, seed: int, guidance: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The compare widget's reference at guidance g (COMPARE_REFERENCE): its final
    latents (1, C, h, w), which each column's latent distance is measured to, and its
    pixels (1, 3, H, W)."""
    reference = dict(COMPARE_REFERENCE, guidance=guidance)
    latents, pixels, _ = compare_run(pipe, prompt, seed, **reference)
    return latents, pixels


def compare_first_result(pipe: StableDiffusion) -> dict:
    """The compare widget's opening: each column's image, NFE and latent distance
    (chapter 9's: the RMS of the difference of the final latents) to the reference,
    COMPARE_REFERENCE at the columns' guidance, whose latents the page keeps."""
    prompt, seed = COMPARE_DEFAULTS["prompt"], COMPARE_DEFAULTS["seed"]
    guidance = {column["guidance"] for column in COMPARE_DEFAULTS["columns"]}
    assert len(guidance) == 1, "the opening columns share one reference"
    reference = dict(COMPARE_REFERENCE, guidance=guidance.pop())
    reference_latents, reference_pixels = compare_reference(
        pipe, prompt, seed, reference["guidance"]
    )
    columns = []
    for column in COMPARE_DEFAULTS["columns"]:
        latents, pixels, nfe = compare_run(pipe, prompt, seed, **column)
        distance = rms(latents - reference_latents).item()
        columns.append(
            {"pixels": uint8_base64(pixels[0]), "nfe": nfe, "distance": distance}
        )
    return {
        "defaults": COMPARE_DEFAULTS,
        "reference": {
            **reference,
            "latents": float32_base64(reference_latents[0]),  # (C, h, w)
            "pixels": uint8_base64(reference_pixels[0]),  # (3, H, W)
        },
        "columns": columns,
    }


def hand_drawn_circle(size: int) -> torch.Tensor:
    """Chapter 10's drawing: a red circle drawn as by hand, a 24-gon whose radius
    wobbles by about 8 %, on black. (3, H, W) pixels in [0, 1]: exactly 8-bit values."""
    rng = np.random.default_rng(0)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    radii = 0.28 * size * (1 + 0.08 * rng.standard_normal(24))
    centre_x, centre_y = 0.48 * size, 0.52 * size
    outline = list(
        zip(centre_x + radii * np.cos(angles), centre_y + radii * np.sin(angles))
    )
    image = Image.new("RGB", (size, size), (20, 20, 20))
    ImageDraw.Draw(image).polygon(outline, fill=(205, 50, 45))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)
    return pixels.permute(2, 0, 1)  # (3, H, W)


def write_runtime(dist: Path, out: Path) -> None:
    """ONNX Runtime Web from its npm package's dist/ folder, as classic scripts in
    `out`: the module bundle as text, the WebAssembly binary as base64."""
    bundle, binary = (Path(dist) / name for name in RUNTIME)
    for path in (bundle, binary):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: install onnxruntime-web "
                "(npm ci --prefix book/live, as .ci/setup does)"
            )
    out.mkdir(parents=True, exist_ok=True)
    # the source map is not shipped
    source = re.sub(r"//# sourceMappingURL=\S+\s*$", "", bundle.read_text())
    write_script(out / f"{bundle.name}.js", bundle.name, source)
    write_script(
        out / f"{binary.name}.js", binary.name, base64_text(binary.read_bytes())
    )


def float32_base64(tensor: torch.Tensor) -> str:
    array = tensor.detach().cpu().numpy().astype("<f4", copy=False)
    return base64_text(np.ascontiguousarray(array).tobytes())


def float64_base64(tensor: torch.Tensor) -> str:
    array = tensor.detach().cpu().numpy().astype("<f8", copy=False)
    return base64_text(np.ascontiguousarray(array).tobytes())


def uint8_base64(pixels: torch.Tensor) -> str:
    """Pixels in [0, 1] as 8-bit values (rounded), base64."""
    array = (pixels.detach().cpu() * 255).round().to(torch.uint8).numpy()
    return base64_text(np.ascontiguousarray(array).tobytes())


def base64_text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_script(path: Path, name: str, value: str | dict) -> None:
    """A classic script that stores `value` as globalThis.minsdLiveFiles[name]."""
    text = json.dumps(value, separators=(",", ":"))
    path.write_text(f"{SCRIPT_START}[{json.dumps(name)}] = {text};\n")


def read_script(path: Path) -> str | dict:
    """The value a script of `write_script` stores."""
    text = Path(path).read_text()
    if not text.startswith(SCRIPT_START):
        raise ValueError(f"{path} was not written by minsd.live.write_script")
    return json.loads(text.split("] = ", 1)[1].rstrip().removesuffix(";"))
