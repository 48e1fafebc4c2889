"""Deterministic DDIM (eta = 0) is Euler's method in sigma, checked against diffusers'
DDIMScheduler.

DDIM keeps its eps prediction and moves the noise level: x_prev = sqrt(abar_prev) x0_hat
+ sqrt(1 - abar_prev) eps. Divided by sqrt(abar_prev) that is x0_hat + sigma_prev eps,
and Euler's step x + (sigma_next - sigma) eps is the same point, since x = x0_hat +
sigma eps. The final step: with SD's set_alpha_to_one=False DDIM ends at abar_0, i.e.
sigma_min = 0.0292, not 0; with set_alpha_to_one=True it ends at sigma = 0 like minsd's
schedules.
"""

import pytest
import torch
from diffusers import DDIMScheduler
from torch.testing import assert_close

from minsd.denoiser import vp_coefficients
from minsd.loading import DEFAULT_MODEL, load_pipeline
from minsd.scheduler import get_sigmas, sample_euler


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(DEFAULT_MODEL, device="cpu")


@pytest.mark.parametrize("steps", [4, 10, 25])
@pytest.mark.parametrize("set_alpha_to_one", [True, False])
def test_ddim_is_euler_in_sigma(pipe, steps, set_alpha_to_one):
    # (1, T, D)
    context = pipe.encode_prompts(["a green triangle on a white background"])
    ddim = DDIMScheduler.from_config(
        pipe_scheduler_config(),
        timestep_spacing="leading",
        set_alpha_to_one=set_alpha_to_one,
        # SD 1.5 does not clip its x0 prediction (DDIMScheduler does by
        # default)
        clip_sample=False,
    )
    ddim.set_timesteps(steps)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    # DDIM's state: x_t = sqrt(abar_t) x, starting from pure noise
    # (init_noise_sigma = 1)
    x_t = noise
    with torch.no_grad():
        for t in ddim.timesteps:
            eps = pipe.unet(x_t, t.float().reshape(1), context)
            x_t = ddim.step(eps, t, x_t, eta=0.0).prev_sample

    # the same timesteps, ending in 0
    sigmas = get_sigmas(pipe.denoiser.sigma_table, steps, "leading")
    assert_close(sigmas[:-1], ddim_sigmas(ddim), rtol=1e-5, atol=0)
    final_abar = 1.0 if set_alpha_to_one else ddim.alphas_cumprod[0].item()
    # DDIM's last step lands on abar_0: Euler to sigma_min instead of to 0
    if not set_alpha_to_one:
        sigmas[-1] = pipe.denoiser.sigma_min
    # the same start, in sigma's variables: x = x_t / sqrt(abar_t)
    x = noise / vp_coefficients(sigmas[0], pipe.denoiser.sigma_table)[2]  # / c_in
    euler = sample_euler(lambda x, sigma: pipe.denoiser(x, sigma, context), x, sigmas)
    assert_close(euler, x_t / final_abar**0.5, rtol=1e-4, atol=1e-4)
    # The comparison can fail: Euler ending at the other final noise level is
    # visibly elsewhere.
    other = sigmas.clone()
    other[-1] = pipe.denoiser.sigma_min if set_alpha_to_one else 0.0
    elsewhere = sample_euler(
        lambda x, sigma: pipe.denoiser(x, sigma, context), x, other
    )
    assert (elsewhere - x_t / final_abar**0.5).abs().max() > 1e-2


def pipe_scheduler_config() -> dict:
    """The default model's scheduler config (SD 1.5's training schedule)."""
    import json

    return json.loads(
        (DEFAULT_MODEL / "scheduler" / "scheduler_config.json").read_text()
    )


def ddim_sigmas(ddim: DDIMScheduler) -> torch.Tensor:
    """The noise levels of DDIM's timesteps, sigma_t = sqrt((1 - abar_t) / abar_t)."""
    abar = ddim.alphas_cumprod[ddim.timesteps].double()
    return ((1 - abar) / abar) ** 0.5
