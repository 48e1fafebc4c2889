"""minsd: Stable Diffusion 1.5 sampling, re-implemented from its mathematics."""

from .denoiser import Denoiser, scaled_linear_alphas_cumprod, sigma_to_t, sigmas_from_alphas_cumprod, vp_coefficients
from .loading import load_pipeline
from .pipeline import CFGDenoiser, Generation, StableDiffusion
from .preview import latents_to_rgb
from .scheduler import (
    get_sigmas,
    karras_sigmas,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_heun_churn,
    spaced_timesteps,
)
from .unet import UNet, UNetConfig

__all__ = [
    "CFGDenoiser",
    "Denoiser",
    "Generation",
    "StableDiffusion",
    "UNet",
    "UNetConfig",
    "get_sigmas",
    "karras_sigmas",
    "latents_to_rgb",
    "load_pipeline",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_heun_churn",
    "scaled_linear_alphas_cumprod",
    "sigma_to_t",
    "sigmas_from_alphas_cumprod",
    "spaced_timesteps",
    "vp_coefficients",
]
