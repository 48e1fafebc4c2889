"""Schedules and the deterministic samplers against diffusers' EulerDiscreteScheduler,
the paper's formulas and the exact flow of Gaussian data: every sampler's order of
convergence."""

import pytest
import torch
from conftest import (
    SIGMA_TABLE,
    DummyEps,
    diffusers_schedule,
    euler_scheduler,
    one_blob_flow,
    sd15_denoiser,
)
from torch.testing import assert_close

from minsd.denoiser import sigma_to_t
from minsd.scheduler import (
    get_sigmas,
    karras_sigmas,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_heun_churn,
    spaced_timesteps,
)
from minsd.toy import GaussianMixture, loglog_slope

# Where diffusers' trailing spacing builds t with np.arange's accumulated float steps,
# minsd computes t = round(M (N - i) / N) - 1 exactly: N = 48 and 96 hit exact ties
# (937.5) that the two round apart, and at N = 61 np.arange overshoots to a 62nd
# timestep t = -1.
TRAILING_TIES = {48, 96}
TRAILING_EXTRA_STEP = {61}


def test_sd15_sigma_range():
    """SD 1.5's noise levels run from sigma_min = 0.029167 (t = 0) to sigma_max =
    14.614641 (t = 999).

    The 0.0292 and 14.6146 that SD 1.x samplers quote (e.g. ComfyUI's defaults), to
    six digits: tighter at t = 0 than test_table_matches_diffusers, whose rtol on
    abar_t allows 0.6% in sigma_min (1 - abar_0 is small).
    """
    assert SIGMA_TABLE[0].item() == pytest.approx(0.029167, abs=1e-6)
    assert SIGMA_TABLE[-1].item() == pytest.approx(14.614641, abs=1e-6)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing", "karras"])
def test_sigmas_and_timesteps_match_diffusers(spacing):
    """For 1 to 100 steps, every spacing's sigmas and timesteps are diffusers', except
    where they differ on purpose."""
    checked = 0
    for n in range(1, 101):
        expected_sigmas, expected_t = diffusers_schedule(spacing, n)
        sigmas = get_sigmas(SIGMA_TABLE, n, spacing)
        t = (
            spaced_timesteps(n, spacing)
            if spacing != "karras"
            else sigma_to_t(sigmas[:-1], SIGMA_TABLE)
        )
        assert sigmas[-1] == 0 and len(sigmas) == n + 1 and (sigmas.diff() < 0).all()
        if n == 1 and spacing in ("linspace", "karras"):
            # diffusers' linspace(0, M-1, 1) = [0]: one step would start
            # at sigma_min. minsd starts at sigma_max.
            assert expected_sigmas[0] == pytest.approx(SIGMA_TABLE[0].item(), rel=1e-4)
            assert sigmas[0] == pytest.approx(SIGMA_TABLE[-1].item())
            continue
        if spacing == "trailing" and n in TRAILING_EXTRA_STEP:
            # diffusers' extra step
            assert len(expected_t) == n + 1 and expected_t[-1] == -1
            continue
        if spacing == "trailing" and n in TRAILING_TIES:
            differ = (t - expected_t).abs()
            exact = 1000 * torch.arange(n, 0, -1, dtype=torch.float64) / n
            # off by one, only at ties
            assert differ.max() == 1 and (exact[differ > 0] % 1 == 0.5).all()
            continue
        # diffusers: float32
        assert_close(t, expected_t, rtol=0, atol=2e-3 if spacing == "karras" else 1e-4)
        assert_close(sigmas, expected_sigmas, rtol=2e-5, atol=1e-7)
        checked += 1
    assert checked >= 97


def test_karras_sigmas_are_eq5():
    """Karras et al. 2022, eq. (5): from sigma_max to sigma_min, and for rho = 1 a
    straight line."""
    sigmas = karras_sigmas(10, 0.1, 10.0)
    assert sigmas[0].item() == pytest.approx(10.0) and sigmas[
        -1
    ].item() == pytest.approx(0.1)
    assert_close(
        karras_sigmas(5, 1.0, 5.0, rho=1.0),
        torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64),
    )


def test_bad_step_counts_are_refused():
    """A step count that is not a positive integer, or an unknown spacing, is an error
    that names it."""
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            get_sigmas(SIGMA_TABLE, bad)
    with pytest.raises(ValueError, match="unknown timestep spacing 'even'"):
        spaced_timesteps(10, "even")


@pytest.mark.parametrize(
    ("spacing", "n"),
    [
        ("linspace", 4),
        ("linspace", 25),
        ("leading", 10),
        ("trailing", 7),
        ("karras", 12),
    ],
)
def test_euler_loop_matches_diffusers(spacing, n):
    """Denoiser + sample_euler equals diffusers' scale_model_input + model + step loop,
    step for step."""
    torch.manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8) * 5

    # diffusers' loop: scale_model_input, the model at the scheduler's timestep, step.
    reference_eps = DummyEps()
    scheduler = euler_scheduler(spacing)
    scheduler.set_timesteps(n)
    # the same start for both (diffusers' leading scales by sqrt(sigma^2 + 1))
    x_ref = x0 * scheduler.sigmas[0]
    for t in scheduler.timesteps:
        eps = reference_eps(scheduler.scale_model_input(x_ref, t), t)
        x_ref = scheduler.step(eps, t, x_ref).prev_sample

    ours_eps = DummyEps()
    sigmas = get_sigmas(SIGMA_TABLE, n, spacing)
    x = sample_euler(sd15_denoiser(ours_eps), x0 * sigmas[0].float(), sigmas)

    # minsd derives t from sigma by log-sigma interpolation; diffusers keeps the t
    # it interpolated sigma from (linearly). They agree exactly at table points
    # and to < 0.005 steps in between.
    assert_close(
        torch.tensor(ours_eps.seen_t),
        torch.tensor(reference_eps.seen_t),
        rtol=0,
        atol=5e-3,
    )
    assert_close(x, x_ref, rtol=1e-5, atol=1e-5)


# (sampler, its order p, step counts N, how far the slope may be from -p). Euler and
# Heun from 8 steps; DPM++ 2M from 16, where its error is in its asymptotic regime
# (from 4 to 8 steps it still grows); at 256 steps its error is ~1e-4, far above the
# float32 state's ~1e-6. Euler over the same range as DPM++ 2M, for contrast.
ORDERS = [
    pytest.param(sample_euler, 1, [8, 16, 32, 64], 0.25, id="euler-8-64"),
    pytest.param(sample_heun, 2, [8, 16, 32, 64], 0.25, id="heun-8-64"),
    pytest.param(sample_dpmpp_2m, 2, [16, 32, 64, 128, 256], 0.3, id="dpmpp_2m-16-256"),
    pytest.param(sample_euler, 1, [16, 32, 64, 128, 256], 0.2, id="euler-16-256"),
]


@pytest.mark.parametrize(("sampler", "order", "steps", "tolerance"), ORDERS)
def test_order_of_convergence_against_the_exact_flow(sampler, order, steps, tolerance):
    """On one Gaussian blob N(mu, s^2 I), whose flow is known exactly (one_blob_flow),
    a sampler of order p ends at an error that falls as N^-p: Euler 1, Heun 2,
    DPM-Solver++(2M) 2."""
    sigma_max = 10.0
    blob = GaussianMixture(means=[[1.0, -0.5]], stds=[0.4])
    x = sigma_max * torch.randn(
        32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    exact = one_blob_flow(blob, x, sigma_max)
    errors = []
    for n in steps:
        # n steps, the last down to exactly 0
        sigmas = karras_sigmas(n + 1, 0.0, sigma_max)
        errors.append(
            (sampler(blob, x, sigmas).double() - exact).norm(dim=1).mean().item()
        )
    slope = loglog_slope(steps, errors)
    print(f"errors {[f'{e:.2e}' for e in errors]} at N = {steps}, slope {slope:.3f}")
    assert abs(slope + order) < tolerance


SAMPLERS = [sample_euler, sample_heun, sample_dpmpp_2m]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda f: f.__name__)
def test_sampler_is_stateless(sampler):
    """Calling a sampler again gives the same answer, whatever ran in between (no
    set_timesteps to forget)."""
    denoiser = sd15_denoiser(DummyEps())
    sigmas = get_sigmas(SIGMA_TABLE, 10)
    x = torch.randn(1, 4, 8, 8) * sigmas[0].float()
    first = sampler(denoiser, x, sigmas)
    sampler(denoiser, x, get_sigmas(SIGMA_TABLE, 5, "karras"))
    assert torch.equal(sampler(denoiser, x, sigmas), first)
    assert torch.isfinite(first).all()


@pytest.mark.parametrize(
    ("sampler", "stochastic"),
    [
        (sample_euler, False),
        (sample_heun, False),
        (sample_dpmpp_2m, False),
        (sample_euler_ancestral, True),
        (sample_heun_churn, True),
    ],
    ids=["euler", "heun", "dpmpp_2m", "euler_ancestral", "heun_churn"],
)
def test_callback_sees_every_step(sampler, stochastic):
    """Every sampler calls back once a step with {i, sigma, sigma_next, x, denoised}:
    what the book plots."""
    seen = []
    sigmas = get_sigmas(SIGMA_TABLE, 6)
    kwargs = {"generator": torch.Generator().manual_seed(0)} if stochastic else {}
    sampler(
        sd15_denoiser(DummyEps()),
        torch.randn(1, 4, 4, 4),
        sigmas,
        callback=seen.append,
        **kwargs,
    )
    assert [s["i"] for s in seen] == list(range(6))
    assert all(set(s) == {"i", "sigma", "sigma_next", "x", "denoised"} for s in seen)
    # the schedule itself: float64, CPU
    assert torch.equal(torch.stack([s["sigma"] for s in seen]), sigmas[:-1])
    assert torch.equal(torch.stack([s["sigma_next"] for s in seen]), sigmas[1:])
    assert all(s["x"].shape == s["denoised"].shape == (1, 4, 4, 4) for s in seen)
