"""Schedules and the Euler sampler against diffusers' EulerDiscreteScheduler."""

import pytest
import torch
from conftest import euler_scheduler
from torch.testing import assert_close

from minsd.denoiser import scaled_linear_alphas_cumprod, sigma_to_t, sigmas_from_alphas_cumprod
from minsd.scheduler import get_sigmas, karras_sigmas, sample_euler, sample_heun, spaced_timesteps

SIGMA_TABLE = sigmas_from_alphas_cumprod(scaled_linear_alphas_cumprod())

# Where diffusers' trailing spacing builds t with np.arange's accumulated float steps, minsd computes
# t = round(M (N - i) / N) - 1 exactly: N = 48 and 96 hit exact ties (937.5) that the two round apart,
# and at N = 61 np.arange overshoots to a 62nd timestep t = -1.
TRAILING_TIES = {48, 96}
TRAILING_EXTRA_STEP = {61}


def diffusers_schedule(spacing: str, n: int):
    if spacing == "karras":
        scheduler = euler_scheduler("linspace", use_karras_sigmas=True)
    else:
        scheduler = euler_scheduler(spacing)
    scheduler.set_timesteps(n)
    return scheduler.sigmas.double(), scheduler.timesteps.double()


def test_sd15_sigma_range():
    """FACTS: sigma_min = 0.029167 (t = 0), sigma_max = 14.614641 (t = 999)."""
    assert SIGMA_TABLE[0].item() == pytest.approx(0.029167, abs=1e-6)
    assert SIGMA_TABLE[-1].item() == pytest.approx(14.614641, abs=1e-6)


def test_four_linspace_steps_are_the_published_ones():
    assert spaced_timesteps(4, "linspace").tolist() == [999, 666, 333, 0]
    assert_close(
        get_sigmas(SIGMA_TABLE, 4).float(), torch.tensor([14.6146, 2.9183, 0.9324, 0.0292, 0.0]), atol=1e-4, rtol=0
    )
    assert spaced_timesteps(4, "leading").tolist() == [751, 501, 251, 1]


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing", "karras"])
def test_sigmas_and_timesteps_match_diffusers(spacing):
    checked = 0
    for n in range(1, 101):
        expected_sigmas, expected_t = diffusers_schedule(spacing, n)
        sigmas = get_sigmas(SIGMA_TABLE, n, spacing)
        t = spaced_timesteps(n, spacing) if spacing != "karras" else sigma_to_t(sigmas[:-1], SIGMA_TABLE)
        assert sigmas[-1] == 0 and len(sigmas) == n + 1 and (sigmas.diff() < 0).all()
        if n == 1 and spacing in ("linspace", "karras"):
            # diffusers' linspace(0, M-1, 1) = [0]: one step would start at sigma_min. minsd starts at sigma_max.
            assert expected_sigmas[0] == pytest.approx(SIGMA_TABLE[0].item(), rel=1e-4)
            assert sigmas[0] == pytest.approx(SIGMA_TABLE[-1].item())
            continue
        if spacing == "trailing" and n in TRAILING_EXTRA_STEP:
            assert len(expected_t) == n + 1 and expected_t[-1] == -1  # diffusers' extra step
            continue
        if spacing == "trailing" and n in TRAILING_TIES:
            differ = (t - expected_t).abs()
            exact = 1000 * torch.arange(n, 0, -1, dtype=torch.float64) / n
            assert differ.max() == 1 and (exact[differ > 0] % 1 == 0.5).all()  # off by one, only at ties
            continue
        assert_close(t, expected_t, rtol=0, atol=2e-3 if spacing == "karras" else 1e-4)  # diffusers: float32
        assert_close(sigmas, expected_sigmas, rtol=2e-5, atol=1e-7)
        checked += 1
    assert checked >= 97


def test_karras_formula():
    """Karras et al. 2022, eq. (5), at its end points and for rho = 1 (a straight line)."""
    sigmas = karras_sigmas(10, 0.1, 10.0)
    assert sigmas[0].item() == pytest.approx(10.0) and sigmas[-1].item() == pytest.approx(0.1)
    assert_close(karras_sigmas(5, 1.0, 5.0, rho=1.0), torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64))


def test_bad_step_counts_are_refused():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            get_sigmas(SIGMA_TABLE, bad)
    with pytest.raises(ValueError, match="unknown timestep spacing 'even'"):
        spaced_timesteps(10, "even")


class DummyEps(torch.nn.Module):
    """A deterministic eps-model, smooth in x and t, that records the timesteps it was called with."""

    def __init__(self):
        super().__init__()
        self.seen_t = []

    def forward(self, x, t):
        self.seen_t.append(float(t))
        return torch.tanh(0.7 * x + 0.3) * torch.cos(torch.as_tensor(t, dtype=torch.float32) / 400)


def minsd_denoiser_of(eps_model):
    """D(x; sigma) = x - sigma eps(x / sqrt(sigma^2 + 1), t(sigma)): the Denoiser's formula for a plain function."""

    def denoiser(x, sigma):
        t = sigma_to_t(sigma.reshape(1), SIGMA_TABLE)[0]
        return x - sigma * eps_model(x / (sigma**2 + 1) ** 0.5, t)

    return denoiser


@pytest.mark.parametrize(
    ("spacing", "n"), [("linspace", 4), ("linspace", 25), ("leading", 10), ("trailing", 7), ("karras", 12)]
)
def test_euler_loop_matches_diffusers(spacing, n):
    torch.manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8) * 5

    # diffusers' loop: scale_model_input, the model at the scheduler's timestep, step.
    reference_eps = DummyEps()
    scheduler = euler_scheduler("linspace", use_karras_sigmas=True) if spacing == "karras" else euler_scheduler(spacing)
    scheduler.set_timesteps(n)
    x_ref = x0 * scheduler.sigmas[0]  # the same start for both (diffusers' leading scales by sqrt(sigma^2 + 1))
    for t in scheduler.timesteps:
        eps = reference_eps(scheduler.scale_model_input(x_ref, t), t)
        x_ref = scheduler.step(eps, t, x_ref).prev_sample

    ours_eps = DummyEps()
    sigmas = get_sigmas(SIGMA_TABLE, n, spacing)
    x = sample_euler(minsd_denoiser_of(ours_eps), x0 * sigmas[0].float(), sigmas)

    # minsd derives t from sigma by log-sigma interpolation; diffusers keeps the t it interpolated sigma
    # from (linearly). They agree exactly at table points and to < 0.005 steps in between.
    assert_close(torch.tensor(ours_eps.seen_t), torch.tensor(reference_eps.seen_t), rtol=0, atol=5e-3)
    assert_close(x, x_ref, rtol=1e-5, atol=1e-5)


def test_sampler_is_stateless():
    denoiser = minsd_denoiser_of(DummyEps())
    sigmas = get_sigmas(SIGMA_TABLE, 10)
    x = torch.randn(1, 4, 8, 8) * sigmas[0].float()
    first, second = sample_euler(denoiser, x, sigmas), sample_euler(denoiser, x, sigmas)
    assert torch.equal(first, second)
    shorter = sample_euler(denoiser, x, get_sigmas(SIGMA_TABLE, 5))  # a new schedule, no set_timesteps to forget
    assert torch.equal(sample_euler(denoiser, x, sigmas), first) and not torch.equal(shorter, first)


def test_callback_sees_every_step():
    seen = []
    sigmas = get_sigmas(SIGMA_TABLE, 6)
    sample_euler(minsd_denoiser_of(DummyEps()), torch.randn(1, 4, 4, 4), sigmas, callback=seen.append)
    assert [s["i"] for s in seen] == list(range(6))
    assert_close(torch.stack([s["sigma"] for s in seen]), sigmas[:-1].float())
    assert all(s["x"].shape == s["denoised"].shape == (1, 4, 4, 4) for s in seen)


def gaussian_denoiser(x, sigma):
    """Exact D for data ~ N(0, 1): the posterior mean x / (1 + sigma^2)."""
    return x / (1 + sigma**2)


def test_euler_and_heun_converge_at_their_orders():
    """For data ~ N(0, 1) the ODE's exact solution is x(sigma) = x(sigma_0) sqrt((1 + sigma^2) / (1 + sigma_0^2)).

    The schedules end at sigma = 0.5, not 0, so that every step (Heun's last one too) is the method's own.
    """
    x0 = torch.ones(1, 1, 1, 1) * 10.0
    exact = (x0 * ((1 + 0.5**2) / (1 + 10.0**2)) ** 0.5).item()
    errors = {}
    for name, sampler in (("euler", sample_euler), ("heun", sample_heun)):
        errors[name] = [
            abs(sampler(gaussian_denoiser, x0, torch.linspace(10.0, 0.5, n + 1)).item() - exact) for n in (20, 40)
        ]
    assert errors["euler"][0] / errors["euler"][1] == pytest.approx(2, rel=0.15)  # first order
    assert errors["heun"][0] / errors["heun"][1] == pytest.approx(4, rel=0.15)  # second order
