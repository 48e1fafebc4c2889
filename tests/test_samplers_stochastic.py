"""The stochastic samplers: Euler ancestral against diffusers, both against exact
answers on Gaussian data."""

import pytest
import torch
from conftest import (
    ALPHAS_CUMPROD,
    SIGMA_TABLE,
    DummyEps,
    euler_ancestral_scheduler,
    one_blob_flow,
    sd15_denoiser,
)
from torch.testing import assert_close

from minsd.scheduler import (
    ancestral_step,
    get_sigmas,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_heun_churn,
)
from minsd.toy import GaussianMixture


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


@pytest.mark.parametrize(
    ("spacing", "n"),
    [("linspace", 4), ("linspace", 25), ("leading", 10), ("trailing", 7)],
)
def test_euler_ancestral_matches_diffusers(spacing, n):
    """Denoiser + sample_euler_ancestral equals diffusers'
    EulerAncestralDiscreteScheduler loop on the same noise."""
    torch.manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8)

    # diffusers' loop, its noise drawn from a CPU generator seeded like ours (same
    # shapes, same order).
    scheduler = euler_ancestral_scheduler(spacing)
    scheduler.set_timesteps(n)
    reference_eps, generator = DummyEps(), seeded(7)
    # the same start for both (diffusers' leading scales by sqrt(sigma^2 + 1))
    x_ref = x0 * scheduler.sigmas[0]
    for t in scheduler.timesteps:
        eps = reference_eps(scheduler.scale_model_input(x_ref, t), t)
        x_ref = scheduler.step(eps, t, x_ref, generator=generator).prev_sample

    sigmas = get_sigmas(SIGMA_TABLE, n, spacing)
    assert_close(sigmas.float(), scheduler.sigmas, rtol=2e-5, atol=1e-7)
    x = sample_euler_ancestral(
        sd15_denoiser(DummyEps()), x0 * sigmas[0].float(), sigmas, generator=seeded(7)
    )
    # t(sigma) differs by < 0.005 training steps between the two (see
    # test_scheduler.py): hence atol 3e-5.
    assert_close(x, x_ref, rtol=1e-5, atol=3e-5)


@pytest.mark.parametrize(("t", "s"), [(500, 499), (700, 300), (999, 0)])
def test_ancestral_noise_is_the_ddpm_posterior(t, s):
    """eta = 1 adds DDPM's posterior noise and lands on sigma_next: sigma_down^2 +
    sigma_up^2 = sigma_next^2.

    From step t to s < t, q(x_s | x_t, x_0) has variance (1 - abar_s) / (1 - abar_t)
    (1 - abar_t / abar_s) (Ho et al. 2020, eq. 7 for s = t - 1; DDIM's sigma_t at
    eta = 1 for any s), in the VP scaling x_s = sqrt(abar_s) (x_0 + sigma_s eps):
    divided by abar_s, it is sigma_up^2 in minsd's sigma view.
    """
    abar_t, abar_s = ALPHAS_CUMPROD[t], ALPHAS_CUMPROD[s]
    posterior_variance = (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
    sigma_down, sigma_up = ancestral_step(SIGMA_TABLE[t], SIGMA_TABLE[s])
    assert_close(sigma_up**2, posterior_variance / abar_s, rtol=1e-9, atol=0)
    assert_close(sigma_down**2 + sigma_up**2, SIGMA_TABLE[s] ** 2, rtol=1e-9, atol=0)


def test_ancestral_step_without_noise_or_to_zero():
    """eta = 0 is a plain step to sigma_next; the last step, to sigma = 0, adds no noise
    and goes down to 0."""
    sigma, sigma_next = torch.tensor(3.0), torch.tensor(1.2)
    assert ancestral_step(sigma, sigma_next, eta=0.0) == (sigma_next, 0.0)
    assert ancestral_step(sigma, torch.tensor(0.0)) == (0.0, 0.0)


def test_ancestral_with_eta_zero_is_euler():
    """eta = 0 adds no noise: Euler ancestral is then sample_euler."""
    denoiser = sd15_denoiser(DummyEps())
    sigmas = get_sigmas(SIGMA_TABLE, 8)
    x = torch.randn(1, 4, 8, 8, generator=seeded(1)) * sigmas[0].float()
    ancestral = sample_euler_ancestral(
        denoiser, x, sigmas, generator=seeded(2), eta=0.0
    )
    assert_close(ancestral, sample_euler(denoiser, x, sigmas), rtol=1e-6, atol=1e-6)


def test_churn_zero_is_algorithm_1():
    """S_churn = 0 is Karras et al.'s Algorithm 1 (sample_heun), and draws nothing from
    the generator."""
    denoiser = sd15_denoiser(DummyEps())
    sigmas = get_sigmas(SIGMA_TABLE, 8, "karras")
    x = torch.randn(1, 4, 8, 8, generator=seeded(1)) * sigmas[0].float()
    generator = seeded(2)
    assert torch.equal(
        sample_heun_churn(denoiser, x, sigmas, generator=generator),
        sample_heun(denoiser, x, sigmas),
    )
    # no noise was drawn
    assert torch.equal(generator.get_state(), seeded(2).get_state())


# 2 / 10 steps; 40 / 10, capped
@pytest.mark.parametrize(("s_churn", "gamma"), [(2.0, 0.2), (40.0, 2**0.5 - 1)])
def test_churn_raises_the_noise_level_as_in_algorithm_2(s_churn, gamma):
    """Step i denoises at sigma_hat = (1 + gamma) sigma_i, gamma = min(S_churn / N,
    sqrt(2) - 1) in [S_tmin, S_tmax].

    Outside that range gamma = 0; the Heun correction then denoises at sigma_{i+1}
    (except on the last step, to 0).
    """
    seen = []

    def recording(x, sigma):
        seen.append(float(sigma))
        return torch.zeros_like(x)

    sigmas = get_sigmas(SIGMA_TABLE, 10, "karras").float()
    x = torch.randn(1, 1, 2, 2)
    sample_heun_churn(
        recording,
        x,
        sigmas,
        generator=seeded(),
        s_churn=s_churn,
        s_tmin=0.5,
        s_tmax=5.0,
    )
    inside = (sigmas[:-1] >= 0.5) & (sigmas[:-1] <= 5.0)
    assert 0 < inside.sum() < 10  # some steps churn, some do not
    sigma_hat = torch.where(inside, (1 + gamma) * sigmas[:-1], sigmas[:-1])
    expected = [value for i in range(9) for value in (sigma_hat[i], sigmas[i + 1])] + [
        sigma_hat[9]
    ]
    assert seen == pytest.approx([float(v) for v in expected], rel=1e-6)


@pytest.mark.parametrize("name", ["ancestral", "churn"])
def test_same_generator_same_sample(name):
    """The seeded generator is a stochastic sampler's only source of randomness, and one
    is required."""
    denoiser = sd15_denoiser(DummyEps())
    sigmas = get_sigmas(SIGMA_TABLE, 10, "karras")
    x = torch.randn(1, 4, 8, 8, generator=seeded(1)) * sigmas[0].float()

    def run(seed):
        if name == "ancestral":
            return sample_euler_ancestral(denoiser, x, sigmas, generator=seeded(seed))
        return sample_heun_churn(
            denoiser, x, sigmas, generator=seeded(seed), s_churn=5.0
        )

    assert torch.equal(run(3), run(3))  # stateless
    assert not torch.allclose(run(3), run(4))  # and it matters
    with pytest.raises(TypeError, match="seeded torch.Generator"):
        sample_euler_ancestral(denoiser, x, sigmas, generator=None)


@pytest.mark.parametrize("name", ["euler", "ancestral", "churn"])
def test_gaussian_data_is_sampled_exactly(name):
    """On data y ~ N(mu, s^2 I), every correct sampler ends with mean mu and standard
    deviation s.

    The ODE sampler maps each start deterministically (one_blob_flow: x_0 -> mu + s
    (x_0 - mu) / sqrt(s^2 + sigma_0^2)); the stochastic ones reach the same
    distribution by another route, so each sample differs.
    """
    mu, s = 0.7, 0.5
    blob = GaussianMixture(means=[[mu, mu]], stds=[s])  # D(x; sigma) = E[y | x]
    sigmas = get_sigmas(SIGMA_TABLE, 200, "karras")
    sigma_0 = sigmas[0].item()
    # 40,000 independent coordinates, as 20,000 points of the plane
    start = torch.randn(20_000, 2, generator=seeded(0))
    x = mu + (s**2 + sigma_0**2) ** 0.5 * start  # exactly p(x; sigma_0)
    if name == "euler":
        out = sample_euler(blob, x, sigmas)
    elif name == "ancestral":
        out = sample_euler_ancestral(blob, x, sigmas, generator=seeded(1))
    else:
        out = sample_heun_churn(blob, x, sigmas, generator=seeded(1), s_churn=40.0)
    # 4 standard errors (s / 200 = 0.0025)
    assert out.mean().item() == pytest.approx(mu, abs=0.01)
    assert out.std().item() == pytest.approx(s, rel=0.02)
    ode_answer = one_blob_flow(blob, x, sigma_0).float()  # mu + s start
    correlation = torch.corrcoef(torch.stack([out.flatten(), ode_answer.flatten()]))[
        0, 1
    ].item()
    if name == "euler":
        # first order: near the exact map at 200 steps
        assert_close(out, ode_answer, rtol=0, atol=0.03)
    else:
        # a different sample: the fresh noise replaced part of the start
        assert correlation < 0.9
