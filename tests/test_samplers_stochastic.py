"""The stochastic samplers: Euler ancestral against diffusers, both against exact answers on Gaussian data."""

import pytest
import torch
from conftest import euler_scheduler
from diffusers import EulerAncestralDiscreteScheduler
from test_scheduler import SIGMA_TABLE, DummyEps, minsd_denoiser_of
from torch.testing import assert_close

from minsd.scheduler import (
    ancestral_step,
    get_sigmas,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_heun_churn,
)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def gaussian_denoiser(mu: float, s: float):
    """Exact D(x; sigma) = E[x0 | x] for data x0 ~ N(mu, s^2 I): mu + s^2 / (s^2 + sigma^2) (x - mu)."""

    def denoiser(x, sigma):
        return mu + s**2 / (s**2 + sigma**2) * (x - mu)

    return denoiser


@pytest.mark.parametrize(("spacing", "n"), [("linspace", 4), ("linspace", 25), ("leading", 10), ("trailing", 7)])
def test_euler_ancestral_matches_diffusers(spacing, n):
    torch.manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8)

    # diffusers' loop, its noise drawn from a CPU generator seeded like ours (same shapes, same order).
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing=spacing
    )
    scheduler.set_timesteps(n)
    reference_eps, generator = DummyEps(), seeded(7)
    x_ref = x0 * scheduler.sigmas[0]  # the same start for both (diffusers' leading scales by sqrt(sigma^2 + 1))
    for t in scheduler.timesteps:
        eps = reference_eps(scheduler.scale_model_input(x_ref, t), t)
        x_ref = scheduler.step(eps, t, x_ref, generator=generator).prev_sample

    sigmas = get_sigmas(SIGMA_TABLE, n, spacing)
    assert_close(sigmas.float(), scheduler.sigmas, rtol=2e-5, atol=1e-7)
    x = sample_euler_ancestral(minsd_denoiser_of(DummyEps()), x0 * sigmas[0].float(), sigmas, generator=seeded(7))
    # t(sigma) differs by < 0.005 training steps between the two (see test_scheduler.py): hence atol 3e-5.
    assert_close(x, x_ref, rtol=1e-5, atol=3e-5)


def test_ancestral_step_lands_on_sigma_next():
    sigma, sigma_next = torch.tensor(3.0), torch.tensor(1.2)
    sigma_down, sigma_up = ancestral_step(sigma, sigma_next)
    assert_close(sigma_down**2 + sigma_up**2, sigma_next**2)
    # eta = 1 is DDPM's posterior noise; in the sigma view its variance is sigma_next^2 (1 - sigma_next^2 / sigma^2).
    assert_close(sigma_up**2, sigma_next**2 * (1 - sigma_next**2 / sigma**2))
    assert ancestral_step(sigma, sigma_next, eta=0.0) == (sigma_next, 0.0)
    assert_close(ancestral_step(sigma, torch.tensor(0.0))[0], torch.tensor(0.0))


def test_ancestral_with_eta_zero_is_euler():
    denoiser = minsd_denoiser_of(DummyEps())
    sigmas = get_sigmas(SIGMA_TABLE, 8)
    x = torch.randn(1, 4, 8, 8, generator=seeded(1)) * sigmas[0].float()
    ancestral = sample_euler_ancestral(denoiser, x, sigmas, generator=seeded(2), eta=0.0)
    assert_close(ancestral, sample_euler(denoiser, x, sigmas), rtol=1e-6, atol=1e-6)


def test_churn_zero_is_algorithm_1():
    denoiser = minsd_denoiser_of(DummyEps())
    sigmas = get_sigmas(SIGMA_TABLE, 8, "karras")
    x = torch.randn(1, 4, 8, 8, generator=seeded(1)) * sigmas[0].float()
    generator = seeded(2)
    assert torch.equal(sample_heun_churn(denoiser, x, sigmas, generator=generator), sample_heun(denoiser, x, sigmas))
    assert torch.equal(generator.get_state(), seeded(2).get_state())  # no noise was drawn


def test_churn_raises_the_noise_level_as_in_algorithm_2():
    """gamma_i = min(S_churn / N, sqrt(2) - 1) inside [S_tmin, S_tmax], else 0; the denoiser runs at sigma_hat."""
    seen = []

    def recording(x, sigma):
        seen.append(float(sigma))
        return torch.zeros_like(x)

    n, s_churn, s_tmin, s_tmax = 10, 2.0, 0.5, 5.0
    sigmas = get_sigmas(SIGMA_TABLE, n, "karras")
    sample_heun_churn(
        recording, torch.randn(1, 1, 2, 2), sigmas, generator=seeded(), s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax
    )
    expected = []
    for sigma, sigma_next in zip(sigmas[:-1].float().tolist(), sigmas[1:].float().tolist(), strict=True):
        gamma = min(s_churn / n, 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
        expected.append(sigma * (1 + gamma))
        if sigma_next > 0:
            expected.append(sigma_next)  # the Heun correction
    assert seen == pytest.approx(expected, rel=1e-6)
    assert any(e > s for e, s in zip(expected[::2], sigmas.tolist(), strict=False))  # some steps did churn


@pytest.mark.parametrize("name", ["ancestral", "churn"])
def test_same_generator_same_sample(name):
    denoiser = minsd_denoiser_of(DummyEps())
    sigmas = get_sigmas(SIGMA_TABLE, 10, "karras")
    x = torch.randn(1, 4, 8, 8, generator=seeded(1)) * sigmas[0].float()

    def run(seed):
        if name == "ancestral":
            return sample_euler_ancestral(denoiser, x, sigmas, generator=seeded(seed))
        return sample_heun_churn(denoiser, x, sigmas, generator=seeded(seed), s_churn=5.0)

    assert torch.equal(run(3), run(3))  # stateless: the seeded generator is the only source of randomness
    assert not torch.allclose(run(3), run(4))  # and it matters
    with pytest.raises(TypeError, match="seeded torch.Generator"):
        sample_euler_ancestral(denoiser, x, sigmas, generator=None)


@pytest.mark.parametrize("name", ["euler", "ancestral", "churn"])
def test_gaussian_data_is_sampled_exactly(name):
    """On x0 ~ N(mu, s^2), every correct sampler ends with mean mu and standard deviation s.

    The ODE sampler maps each start deterministically (x_N -> mu + s (x_N - mu) / sqrt(s^2 + sigma_0^2));
    the stochastic ones reach the same distribution by another route, so each sample differs.
    """
    mu, s = 0.7, 0.5
    denoiser = gaussian_denoiser(mu, s)
    sigmas = get_sigmas(SIGMA_TABLE, 200, "karras")
    sigma_0 = sigmas[0].item()
    start = torch.randn(1, 1, 200, 200, generator=seeded(0))  # 40,000 independent coordinates
    x = mu + (s**2 + sigma_0**2) ** 0.5 * start  # exactly p(x; sigma_0)
    if name == "euler":
        out = sample_euler(denoiser, x, sigmas)
    elif name == "ancestral":
        out = sample_euler_ancestral(denoiser, x, sigmas, generator=seeded(1))
    else:
        out = sample_heun_churn(denoiser, x, sigmas, generator=seeded(1), s_churn=40.0)
    assert out.mean().item() == pytest.approx(mu, abs=0.01)  # 4 standard errors (s / 200 = 0.0025)
    assert out.std().item() == pytest.approx(s, rel=0.02)
    ode_answer = mu + s * start
    correlation = torch.corrcoef(torch.stack([out.flatten(), ode_answer.flatten()]))[0, 1].item()
    if name == "euler":
        assert_close(out, ode_answer, rtol=0, atol=0.03)  # first order: near the exact map at 200 steps
    else:
        assert correlation < 0.9  # a different sample: the fresh noise replaced part of the start


def test_callbacks_report_every_step():
    sigmas = get_sigmas(SIGMA_TABLE, 6)
    for sampler in (sample_euler_ancestral, sample_heun_churn):
        seen = []
        sampler(
            minsd_denoiser_of(DummyEps()), torch.randn(1, 4, 4, 4), sigmas, generator=seeded(), callback=seen.append
        )
        assert [s["i"] for s in seen] == list(range(6))
        assert all(set(s) == {"i", "sigma", "sigma_next", "x", "denoised"} for s in seen)
        assert all(s["x"].shape == s["denoised"].shape == (1, 4, 4, 4) for s in seen)


def test_conftest_scheduler_is_sd15():  # the reference above must use SD 1.5's training schedule
    assert_close(euler_scheduler().alphas_cumprod.double(), (1 / (1 + SIGMA_TABLE**2)), rtol=1e-5, atol=0)
