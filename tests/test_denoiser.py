"""The denoiser's identities: sigma^-1, the VP preconditioning, the Euler step in eps form."""

import torch
from conftest import TINY_UNET_CONFIGS, diffusers_unet, euler_scheduler
from torch.testing import assert_close

from minsd.denoiser import Denoiser, scaled_linear_alphas_cumprod, sigma_to_t, sigmas_from_alphas_cumprod
from minsd.unet import UNet

ALPHAS_CUMPROD = scaled_linear_alphas_cumprod()
SIGMA_TABLE = sigmas_from_alphas_cumprod(ALPHAS_CUMPROD)


def test_table_matches_diffusers():
    scheduler = euler_scheduler()
    assert_close(ALPHAS_CUMPROD.float(), scheduler.alphas_cumprod, rtol=1e-5, atol=0)


def test_sigma_to_t_round_trip_at_table_points():
    t = torch.arange(1000, dtype=torch.float64)
    assert_close(sigma_to_t(SIGMA_TABLE, SIGMA_TABLE), t, rtol=0, atol=1e-9)


def test_sigma_to_t_matches_diffusers_between_points():
    scheduler = euler_scheduler()
    log_sigmas = SIGMA_TABLE.log().numpy()
    sigmas = torch.exp(torch.linspace(SIGMA_TABLE[0].log(), SIGMA_TABLE[-1].log(), 777, dtype=torch.float64))
    expected = torch.tensor(scheduler._sigma_to_t(sigmas.numpy(), log_sigmas))
    assert_close(sigma_to_t(sigmas, SIGMA_TABLE), expected, rtol=0, atol=1e-6)
    # Outside the table t is clamped to [0, M - 1].
    assert sigma_to_t(torch.tensor([1e-4, 100.0]), SIGMA_TABLE).tolist() == [0.0, 999.0]


def tiny_denoiser() -> Denoiser:
    reference = diffusers_unet(TINY_UNET_CONFIGS["tiny-b"])
    unet = UNet(TINY_UNET_CONFIGS["tiny-b"])
    unet.load_state_dict(reference.state_dict())
    return Denoiser(unet.eval(), ALPHAS_CUMPROD)


def test_denoiser_is_eq7_with_vp_coefficients():
    """D(x; sigma) = x - sigma F(x / sqrt(sigma^2 + 1); t(sigma)), written out by hand for one sigma."""
    denoiser = tiny_denoiser()
    x, context = torch.randn(2, 4, 8, 8) * 3, torch.randn(2, 5, 24)
    sigma = SIGMA_TABLE[700].float()
    with torch.no_grad():
        eps = denoiser.unet(x / (sigma**2 + 1).sqrt(), torch.tensor(700.0), context)
        assert_close(denoiser(x, sigma, context), x - sigma * eps, rtol=1e-5, atol=1e-5)
        # c_in = 1 / sqrt(sigma^2 + 1), not the 1 / (sigma^2 + 1) of the original project's README.
        wrong = denoiser.unet(x / (sigma**2 + 1), torch.tensor(700.0), context)
        assert (x - sigma * wrong - denoiser(x, sigma, context)).abs().max() > 1e-2


def test_euler_step_with_D_is_the_eps_step():
    """x + (s' - s)(x - D)/s == x + (s' - s) eps: the boxed update of the book's denoiser chapter."""
    denoiser = tiny_denoiser()
    x, context = torch.randn(1, 4, 8, 8) * 5, torch.randn(1, 5, 24)
    sigma, sigma_next = SIGMA_TABLE[600].float(), SIGMA_TABLE[400].float()
    with torch.no_grad():
        denoised = denoiser(x, sigma, context)
        eps = denoiser.unet(x / (sigma**2 + 1).sqrt(), sigma_to_t(sigma.reshape(1), SIGMA_TABLE), context)
    assert_close(
        x + (sigma_next - sigma) * (x - denoised) / sigma, x + (sigma_next - sigma) * eps, rtol=1e-5, atol=1e-5
    )


def test_per_sample_sigmas():
    denoiser = tiny_denoiser()
    x, context = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 24)
    sigmas = torch.tensor([0.5, 7.0])
    with torch.no_grad():
        both = denoiser(x, sigmas, context)
        first = denoiser(x[:1], sigmas[0], context[:1])
        second = denoiser(x[1:], sigmas[1], context[1:])
    # Compare the noise predictions (x - D) / sigma, which are O(1) whatever sigma is. A batch of 2 and
    # two batches of 1 may take different BLAS kernels that sum in other orders: float32 rounding
    # (1.2e-7) over reductions of up to ~600 terms, ~20 layers deep, allows ~1e-5 here (3e-6 was seen
    # on one CPU: 2.1e-5 in D at sigma 7). A sigma given to the wrong sample changes eps by O(0.1).
    sigma_b = sigmas.reshape(2, 1, 1, 1)
    eps_both = (x - both) / sigma_b
    eps_apart = (x - torch.cat([first, second])) / sigma_b
    assert_close(eps_both, eps_apart, rtol=1e-4, atol=1e-4)
