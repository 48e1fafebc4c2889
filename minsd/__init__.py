"""minsd: Stable Diffusion 1.5 sampling, re-implemented from its mathematics.

`import minsd` is cheap: each name below loads its module (and torch) when it is first
used (PEP 562), so that `python -m minsd --help` answers without importing torch.
"""

import importlib

# Each public name and the module that defines it.
_MODULES = {
    "SAMPLERS": "choices",
    "SPACINGS": "choices",
    "Denoiser": "denoiser",
    "scaled_linear_alphas_cumprod": "denoiser",
    "sigma_to_t": "denoiser",
    "sigmas_from_alphas_cumprod": "denoiser",
    "t_to_sigma": "denoiser",
    "vp_coefficients": "denoiser",
    "MinsdError": "errors",
    "load_pipeline": "loading",
    "CFGDenoiser": "pipeline",
    "Generation": "pipeline",
    "StableDiffusion": "pipeline",
    "latents_to_rgb": "preview",
    "get_sigmas": "scheduler",
    "karras_sigmas": "scheduler",
    "sample_dpmpp_2m": "scheduler",
    "sample_euler": "scheduler",
    "sample_euler_ancestral": "scheduler",
    "sample_heun": "scheduler",
    "sample_heun_churn": "scheduler",
    "spaced_timesteps": "scheduler",
    "UNet": "unet",
    "UNetConfig": "unet",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str) -> object:
    if name not in _MODULES:
        raise AttributeError(f"module 'minsd' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
