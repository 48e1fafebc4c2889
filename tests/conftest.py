"""What the tests share: SD 1.5's noise schedule and diffusers' schedulers on it, a
stand-in eps-model, the exact flow of one Gaussian blob, tiny SD 1.5-shaped components
(random weights) and a saved diffusers folder of them, the command line run as a user
runs it, and the built book."""

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from ldm_layout import ldm_checkpoint
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from minsd.configs import diffusers_unet_config
from minsd.denoiser import (
    Denoiser,
    scaled_linear_alphas_cumprod,
    sigmas_from_alphas_cumprod,
)
from minsd.tokenizer import build_clip_tokenizer
from minsd.toy import GaussianMixture
from minsd.unet import UNetConfig

ROOT = Path(__file__).resolve().parents[1]

# -- SD 1.5's noise schedule, and diffusers' schedulers on it ---------------------------------

# minsd's computation of SD 1.5's training schedule; test_denoiser.py checks it
# against diffusers'.
ALPHAS_CUMPROD = scaled_linear_alphas_cumprod()  # (1000,) float64
SIGMA_TABLE = sigmas_from_alphas_cumprod(ALPHAS_CUMPROD)  # (1000,) float64, increasing

# The SD 1.5 repo's scheduler config; it names no timestep_spacing, so the tests
# always pin one.
SD15_SCHEDULE = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
)


def euler_scheduler(spacing: str = "linspace") -> EulerDiscreteScheduler:
    """diffusers' Euler scheduler on SD 1.5's training schedule; 'karras' is its
    use_karras_sigmas=True."""
    if spacing == "karras":
        return EulerDiscreteScheduler(
            **SD15_SCHEDULE, timestep_spacing="linspace", use_karras_sigmas=True
        )
    return EulerDiscreteScheduler(**SD15_SCHEDULE, timestep_spacing=spacing)


def euler_ancestral_scheduler(
    spacing: str = "linspace",
) -> EulerAncestralDiscreteScheduler:
    """diffusers' Euler ancestral scheduler on SD 1.5's training schedule."""
    return EulerAncestralDiscreteScheduler(**SD15_SCHEDULE, timestep_spacing=spacing)


def diffusers_schedule(
    spacing: str, num_steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' Euler schedule for num_steps steps: sigmas (N + 1,) ending in 0 and
    timesteps (N,), float64."""
    scheduler = euler_scheduler(spacing)
    scheduler.set_timesteps(num_steps)
    return scheduler.sigmas.double(), scheduler.timesteps.double()


class DummyEps(torch.nn.Module):
    """A stand-in for the UNet: a deterministic eps(x, t), smooth in x and t, that
    records the timesteps it sees."""

    def __init__(self):
        super().__init__()
        # Denoiser runs the network in its parameters' dtype
        self.slope = torch.nn.Parameter(torch.tensor(0.7))
        self.seen_t = []

    def forward(self, x, t, context=None):  # no text: context is ignored
        self.seen_t.append(float(t))
        return torch.tanh(self.slope * x + 0.3) * torch.cos(
            torch.as_tensor(t, dtype=torch.float32) / 400
        )


def sd15_denoiser(eps_model: torch.nn.Module):
    """minsd's Denoiser around eps_model on SD 1.5's schedule, called as the samplers
    call it: D(x; sigma)."""
    denoiser = Denoiser(eps_model, ALPHAS_CUMPROD)
    no_text = torch.zeros(1, 1, 1)  # (B, T, D): DummyEps reads no text

    def denoise(x, sigma):
        return denoiser(x, sigma, no_text)

    return denoise


# -- One Gaussian blob: data whose probability flow is known exactly --------------------------


def one_blob_flow(
    blob: GaussianMixture, x: torch.Tensor, sigma_from: float, sigma_to: float = 0.0
) -> torch.Tensor:
    """Where the probability-flow ODE carries x from sigma_from to sigma_to, for data
    of one Gaussian N(mu, s^2 I): float64, like x.

    With D(x; sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu), the Gaussian posterior
    mean, the ODE dx/dsigma = (x - D) / sigma = sigma (x - mu) / (s^2 + sigma^2) is
    solved exactly by x(sigma) - mu = (x(sigma_from) - mu) sqrt((s^2 + sigma^2) /
    (s^2 + sigma_from^2)).
    """
    (mu,), (s,) = blob.means, blob.stds  # (2,), ()
    shrink = ((s**2 + sigma_to**2) / (s**2 + sigma_from**2)) ** 0.5
    return mu + shrink * (x.double() - mu)


# -- Tiny SD 1.5-shaped components ------------------------------------------------------------

# Two tiny UNets of SD 1.5's shape: 4 levels, cross-attention on the first three down
# / last three up blocks.
TINY_UNET_CONFIGS = {
    "tiny-a": UNetConfig(
        sample_size=8,
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=2,
        num_heads=2,
        cross_attention_dim=32,
        norm_num_groups=8,
    ),
    "tiny-b": UNetConfig(
        sample_size=8,
        block_out_channels=(16, 32, 48, 48),
        layers_per_block=1,
        num_heads=4,
        cross_attention_dim=24,
        norm_num_groups=4,
    ),
}


def diffusers_unet(cfg: UNetConfig, seed: int = 0) -> UNet2DConditionModel:
    """diffusers' UNet2DConditionModel with the same sizes; every weight random (none
    left at zero)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(diffusers_unet_config(cfg))
    randomize(unet)
    return unet.eval()


def randomize(module: torch.nn.Module, scale: float = 0.05) -> None:
    """Add noise to every parameter, so that zero-initialised layers cannot hide a
    wiring mistake."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """A 4-level AutoencoderKL: factor 8 and 4 latent channels, like SD 1.5's."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
    )
    return vae.eval()


TINY_MERGES = [
    ("r", "e"),
    ("re", "d</w>"),
    ("c", "i"),
    ("ci", "r"),
    ("a", "t</w>"),
    ("b", "l"),
    ("u", "e</w>"),
]


def tiny_tokenizer(max_length: int = 77):
    return build_clip_tokenizer(TINY_MERGES, model_max_length=max_length)


def tiny_text_encoder(cross_attention_dim: int, seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tiny_tokenizer()),
        hidden_size=cross_attention_dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=77,
        bos_token_id=len(tiny_tokenizer()) - 2,
        eos_token_id=len(tiny_tokenizer()) - 1,
        hidden_act="quick_gelu",
    )
    return CLIPTextModel(config).eval()


def diffusers_pipeline(
    cfg: UNetConfig = TINY_UNET_CONFIGS["tiny-a"],
) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(cfg.cross_attention_dim),
        tokenizer=tiny_tokenizer(),
        unet=diffusers_unet(cfg),
        scheduler=euler_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.fixture(scope="session")
def tiny_reference() -> StableDiffusionPipeline:
    """A tiny diffusers text-to-image pipeline (random weights), the reference for
    minsd's."""
    return diffusers_pipeline()


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory, tiny_reference):
    """The tiny reference pipeline, saved in diffusers' folder format with
    safetensors."""
    folder = tmp_path_factory.mktemp("tiny-sd")
    tiny_reference.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_reference) -> Path:
    """The tiny reference pipeline as one .safetensors file in the original SD (LDM)
    layout, as SD 1.x fine-tunes circulate."""
    path = tmp_path_factory.mktemp("single-file") / "tiny-sd.safetensors"
    save_file(ldm_checkpoint(tiny_reference), path)
    return path


# -- The command line ---------------------------------------------------------------------


def cli_env() -> dict[str, str]:
    """The environment of a user's `python -m minsd`: offline, and with no
    MINSD_WEIGHTS, so that the default model runs unless --weights names others."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("MINSD_WEIGHTS", None)
    return env


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m minsd *args` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "minsd", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=cwd,
        timeout=300,
    )


# -- The book, built once for the browser tests ---------------------------------------


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """The book built strictly (every notebook executed, no warning allowed): its
    _build/html folder."""
    out = tmp_path_factory.mktemp("book")
    command = [
        str(Path(sys.executable).parent / "jupyter-book"),
        *("build", str(ROOT), "--path-output", str(out), "--all", "-W", "-n"),
        "--keep-going",
    ]
    # As on many servers and CI images: a kernel would draw no figure on plt.show()
    # unless the chapters' setup makes it (tests/test_book.py finds every figure).
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=1800, env=env
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return out / "_build" / "html"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def book_server(built_book):
    """The built book served over http on 127.0.0.1: its base URL."""
    handler = functools.partial(QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
