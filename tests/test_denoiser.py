"""The denoiser's identities: sigma^-1 and the VP coefficients against diffusers and
DDPM, and D(x; sigma) as diffusers' Euler scheduler denoises."""

import torch
from conftest import (
    ALPHAS_CUMPROD,
    SIGMA_TABLE,
    TINY_UNET_CONFIGS,
    diffusers_unet,
    euler_scheduler,
)
from torch.testing import assert_close

from minsd.denoiser import Denoiser, sigma_to_t, vp_coefficients
from minsd.unet import UNet


def test_table_matches_diffusers():
    """SD 1.5's training schedule (scaled_linear betas) gives diffusers'
    alphas_cumprod."""
    scheduler = euler_scheduler()
    assert_close(ALPHAS_CUMPROD.float(), scheduler.alphas_cumprod, rtol=1e-5, atol=0)


def test_sigma_to_t_round_trip_at_table_points():
    """sigma^-1 maps each training step's noise level back to the step: t(sigma_t) =
    t."""
    t = torch.arange(1000, dtype=torch.float64)
    assert_close(sigma_to_t(SIGMA_TABLE, SIGMA_TABLE), t, rtol=0, atol=1e-9)


def test_sigma_to_t_matches_diffusers_between_points():
    """Between table points sigma^-1 is diffusers' _sigma_to_t (log-sigma
    interpolation); outside, clamped."""
    scheduler = euler_scheduler()
    log_sigmas = SIGMA_TABLE.log().numpy()
    sigmas = torch.exp(
        torch.linspace(
            SIGMA_TABLE[0].log(), SIGMA_TABLE[-1].log(), 777, dtype=torch.float64
        )
    )
    expected = torch.tensor(scheduler._sigma_to_t(sigmas.numpy(), log_sigmas))
    assert_close(sigma_to_t(sigmas, SIGMA_TABLE), expected, rtol=0, atol=1e-6)
    # Outside the table t is clamped to [0, M - 1].
    assert sigma_to_t(torch.tensor([1e-4, 100.0]), SIGMA_TABLE).tolist() == [0.0, 999.0]


def tiny_denoiser(reference) -> Denoiser:
    """minsd's Denoiser around minsd's UNet, loaded with the weights of diffusers'
    reference UNet."""
    unet = UNet(TINY_UNET_CONFIGS["tiny-b"])
    unet.load_state_dict(reference.state_dict())
    return Denoiser(unet.eval(), ALPHAS_CUMPROD)


def test_denoiser_is_diffusers_pred_original_sample():
    """D(x; sigma) is the x0 that diffusers' EulerDiscreteScheduler predicts from the
    same UNet, at every step of a 4-step linspace schedule (t = 999, 666, 333, 0: table
    points, where both use the same t)."""
    reference = diffusers_unet(TINY_UNET_CONFIGS["tiny-b"])
    denoiser = tiny_denoiser(reference)
    scheduler = euler_scheduler("linspace")
    scheduler.set_timesteps(4)
    torch.manual_seed(0)
    context = torch.randn(2, 5, 24)
    for sigma, t in zip(scheduler.sigmas[:-1], scheduler.timesteps, strict=True):
        # x = y + sigma n: a clean latent y ~ N(0, I) plus noise of level sigma
        x = torch.randn(2, 4, 8, 8) + sigma * torch.randn(2, 4, 8, 8)
        with torch.no_grad():
            eps = reference(scheduler.scale_model_input(x, t), t, context).sample
            denoised = denoiser(x, sigma, context)
        expected = scheduler.step(eps, t, x).pred_original_sample
        # |D| up to ~70; 3.5e-5 seen, a 1% sigma error: 5e-4
        assert_close(denoised, expected, rtol=1e-5, atol=1e-4)


def test_vp_coefficients_are_diffusers_and_ddpm():
    """Karras et al. 2022, Table 1 (VP) for SD's eps-model, against diffusers on a
    25-step schedule (fractional steps) and DDPM's own quantities at every training
    step.

    c_in is diffusers' scale_model_input; at a training step t it is sqrt(abar_t),
    so that c_in x = x_t is the UNet's training input, and c_noise is t. c_skip x +
    c_out eps is DDPM's x0 prediction (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
    (Ho et al. 2020, eq. 15). (The seed project's README wrote c_in = 1 / (sigma^2 + 1):
    that is off by a factor sqrt(sigma^2 + 1), 14.65 at sigma_max, and fails the first
    check.)
    """
    scheduler = euler_scheduler("linspace")
    scheduler.set_timesteps(25)
    for i, t in enumerate(scheduler.timesteps):
        scheduler.set_timesteps(25)  # scale_model_input reads the step it is at
        scale = scheduler.scale_model_input(torch.ones(()), t)
        _, _, c_in, _ = vp_coefficients(scheduler.sigmas[i].double(), SIGMA_TABLE)
        assert_close(c_in.float(), scale, rtol=1e-6, atol=0)

    # at every training step t: sigma_t = sqrt((1 - abar_t) / abar_t)
    t = torch.arange(1000)
    abar = ALPHAS_CUMPROD  # (1000,), checked against diffusers' above
    c_skip, c_out, c_in, c_noise = vp_coefficients(SIGMA_TABLE, SIGMA_TABLE)
    assert_close(c_noise, t.double(), rtol=0, atol=1e-9)
    assert_close(c_in, abar**0.5)
    x, eps = torch.randn(2, 1000, dtype=torch.float64)  # (1000,) each
    x_t = abar**0.5 * x
    x0_ddpm = (x_t - (1 - abar) ** 0.5 * eps) / abar**0.5
    assert_close(c_skip * x + c_out * eps, x0_ddpm)


def test_per_sample_sigmas():
    """A batch with one sigma per sample is denoised as each sample alone at its own
    sigma."""
    denoiser = tiny_denoiser(diffusers_unet(TINY_UNET_CONFIGS["tiny-b"]))
    x, context = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 24)
    sigmas = torch.tensor([0.5, 7.0])
    with torch.no_grad():
        both = denoiser(x, sigmas, context)
        first = denoiser(x[:1], sigmas[0], context[:1])
        second = denoiser(x[1:], sigmas[1], context[1:])
    # Compare the noise predictions (x - D) / sigma, which are O(1) whatever sigma
    # is. A batch of 2 and two batches of 1 may take different BLAS kernels that
    # sum in other orders: float32 rounding (1.2e-7) over reductions of up to ~600
    # terms, ~20 layers deep, allows ~1e-5 here (3e-6 was seen on one CPU: 2.1e-5
    # in D at sigma 7). A sigma given to the wrong sample changes eps by O(0.1).
    sigma_b = sigmas.reshape(2, 1, 1, 1)
    eps_both = (x - both) / sigma_b
    eps_apart = (x - torch.cat([first, second])) / sigma_b
    assert_close(eps_both, eps_apart, rtol=1e-4, atol=1e-4)
