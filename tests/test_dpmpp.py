"""DPM-Solver++(2M): second order against a Runge-Kutta flow, and diffusers'
DPMSolverMultistepScheduler (its order on the exact flow of Gaussian data, beside
Euler's and Heun's, and its statelessness and callback: test_scheduler.py)."""

import math

import pytest
import torch
from conftest import SD15_SCHEDULE, SIGMA_TABLE, DummyEps, sd15_denoiser
from diffusers import DPMSolverMultistepScheduler
from torch.testing import assert_close

from minsd.denoiser import t_to_sigma, vp_coefficients
from minsd.scheduler import get_sigmas, karras_sigmas, sample_dpmpp_2m, sample_euler
from minsd.toy import example_mixture, loglog_slope

# -- Order of convergence on the toy mixture ------------------------------------------------------


def runge_kutta_flow(
    denoiser, x: torch.Tensor, sigma_from: float, sigma_to: float, n: int
) -> torch.Tensor:
    """The classical 4th-order Runge-Kutta method in float64 on dx/dt = D(x; e^-t) -
    x, t = -log sigma, n even steps.

    An independent reference: with t = -log sigma, dx/dsigma = (x - D) / sigma
    becomes dx/dt = D - x.
    """
    x = x.double()
    t = torch.linspace(
        -math.log(sigma_from), -math.log(sigma_to), n + 1, dtype=torch.float64
    ).tolist()
    for t_i, t_next in zip(t[:-1], t[1:]):
        dt, t_mid = t_next - t_i, (t_i + t_next) / 2
        k1 = denoiser(x, math.exp(-t_i)) - x
        k2 = denoiser(x + dt / 2 * k1, math.exp(-t_mid)) - (x + dt / 2 * k1)
        k3 = denoiser(x + dt / 2 * k2, math.exp(-t_mid)) - (x + dt / 2 * k2)
        k4 = denoiser(x + dt * k3, math.exp(-t_next)) - (x + dt * k3)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def test_order_two_on_the_mixture_against_runge_kutta():
    """The three-blob mixture, whose D is nonlinear in x, from sigma = 10 to 0.02 (a
    schedule that does not end in 0, so every step after the first is second order): the
    error against a fine Runge-Kutta solution falls as N^-2."""
    mixture, sigma_max, sigma_min = example_mixture(), 10.0, 0.02
    x = sigma_max * torch.randn(
        32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    reference = runge_kutta_flow(mixture, x, sigma_max, sigma_min, 200)
    coarser = runge_kutta_flow(mixture, x, sigma_max, sigma_min, 100)
    # RK4's own error: far below the errors measured below
    assert (reference - coarser).norm(dim=1).mean() < 1e-5
    steps = [16, 32, 64, 128]
    errors = []
    for n in steps:
        # n steps from sigma_max to sigma_min
        sigmas = karras_sigmas(n + 1, sigma_min, sigma_max)
        errors.append(
            (sample_dpmpp_2m(mixture, x, sigmas).double() - reference)
            .norm(dim=1)
            .mean()
            .item()
        )
    slope = loglog_slope(steps, errors)
    print(
        f"mixture, dpmpp_2m: errors {[f'{e:.2e}' for e in errors]} at N = {steps}, slope {slope:.3f}"
    )
    assert -2.3 < slope < -1.7


# -- Against diffusers' DPMSolverMultistepScheduler ---------------------------------------------
# diffusers' state is VP: x_t = alpha_t x with alpha_t = 1 / sqrt(sigma^2 + 1) = c_in,
# its x_T = noise (init_noise_sigma = 1), and it calls the model on x_t itself
# (scale_model_input is the identity). minsd's state is x = x_t / c_in, and its Denoiser
# calls the model on c_in x = x_t at t = sigma^-1(sigma). At sigma = 0 the two states
# coincide.


def dpm_scheduler(karras: bool = False, **config) -> DPMSolverMultistepScheduler:
    """diffusers' DPM-Solver++(2M) (data prediction, midpoint) on SD 1.5's schedule:
    linspace or Karras sigmas."""
    return DPMSolverMultistepScheduler(
        **SD15_SCHEDULE,
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        timestep_spacing="linspace",
        use_karras_sigmas=karras,
        **config,
    )


def diffusers_states(
    scheduler: DPMSolverMultistepScheduler, n: int, noise: torch.Tensor, eps_model
) -> torch.Tensor:
    """diffusers' loop (scale_model_input, the model at the scheduler's timestep, step):
    its VP state before every step and after the last, (n + 1, *noise.shape)."""
    scheduler.set_timesteps(n)
    assert scheduler.init_noise_sigma == 1.0
    x = noise * scheduler.init_noise_sigma  # x_T
    states = [x]
    for t in scheduler.timesteps:
        eps = eps_model(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(eps, t, x).prev_sample
        states.append(x)
    return torch.stack(states)


def minsd_states(
    sampler_calls: list[torch.Tensor], noise: torch.Tensor, eps_model
) -> torch.Tensor:
    """sample_dpmpp_2m from the same x_T, x = x_T / c_in(sigma_0), called once per
    schedule in sampler_calls (each starts where the last ended): its states in
    diffusers' VP form x_t = c_in x, like diffusers_states."""
    denoiser = sd15_denoiser(eps_model)
    _, _, c_in_0, _ = vp_coefficients(sampler_calls[0][0], SIGMA_TABLE)
    x = noise / c_in_0.float()
    states = []
    for sigmas in sampler_calls:
        seen = []
        x = sample_dpmpp_2m(denoiser, x, sigmas, callback=seen.append)
        states += [step["x"] for step in seen]
    states.append(x)
    # (n + 1,)
    visited = torch.cat(
        [sigmas[:-1] for sigmas in sampler_calls] + [sampler_calls[-1][-1:]]
    )
    _, _, c_in, _ = vp_coefficients(visited, SIGMA_TABLE)
    # (n + 1, 1, 1, 1, 1)
    c_in = c_in.float().reshape(-1, *[1] * noise.dim())
    return torch.stack(states) * c_in  # x_t = c_in x


def float32_bound(n: int, states: torch.Tensor) -> float:
    """How far two float32 loops that round differently may drift apart in n steps: 2
    eps max|x| per step (four unit roundoffs of the largest entry), added up. Each step
    rounds about five x-sized products and sums on each side, in diffusers' VP form and
    in minsd's; and this flow hardly amplifies a perturbation (for DummyEps a change of
    x_T moves the result by at most ~1.5x as much), so the drift grows about linearly in
    n."""
    return 2 * n * torch.finfo(torch.float32).eps * states.abs().max().item()


class WholeStepEps(DummyEps):
    """DummyEps read at the nearest whole training step. diffusers' DPM scheduler rounds
    the timesteps of Karras sigmas to whole steps, minsd's Denoiser hands the model the
    fractional t = sigma^-1(sigma) (as diffusers' Euler scheduler does); for this model
    the two are the same, which leaves the solvers to compare."""

    def forward(self, x, t, context=None):
        return super().forward(
            x, torch.as_tensor(t, dtype=torch.float64).round(), context
        )


@pytest.mark.parametrize("n", [1, 2, 5, 10, 14, 15, 25, 50])
@pytest.mark.parametrize("karras", [False, True], ids=["linspace", "karras"])
def test_matches_diffusers_step_for_step(karras, n):
    """sample_dpmpp_2m equals diffusers' loop at every step, driven by the same noise
    and eps-model, on diffusers' own schedule. minsd takes scheduler.sigmas: diffusers'
    DPM 'linspace' visits the whole steps round(999 (N - i) / N), neither minsd's nor
    diffusers' Euler linspace, and its Karras sigma_min comes from a float32 table,
    1.3e-5 off minsd's; both are checked against minsd's schedule functions here."""
    torch.manual_seed(0)
    noise = torch.randn(2, 4, 8, 8)
    # lower_order_final=True, final_sigmas_type="zero": diffusers' defaults
    scheduler = dpm_scheduler(karras)
    reference_eps, ours_eps = WholeStepEps(), WholeStepEps()
    expected = diffusers_states(scheduler, n, noise, reference_eps)
    sigmas = scheduler.sigmas.double()  # (n + 1,), float32 values, ending in 0
    if karras:
        assert_close(sigmas, get_sigmas(SIGMA_TABLE, n, "karras"), rtol=2e-5, atol=0)
    else:
        assert_close(
            sigmas[:-1], t_to_sigma(scheduler.timesteps, SIGMA_TABLE), rtol=2e-5, atol=0
        )
    assert sigmas[-1] == 0

    states = minsd_states([sigmas], noise, ours_eps)
    # The model sees the same timesteps (whole steps: WholeStepEps rounds minsd's
    # fractional ones).
    assert ours_eps.seen_t == reference_eps.seen_t
    bound = float32_bound(n, expected)
    max_diff = (states - expected).abs().max().item()
    print(
        f"{'karras' if karras else 'linspace'} N={n}: max |diff| {max_diff:.2e} (bound {bound:.2e})"
    )
    assert max_diff <= bound


@pytest.mark.parametrize("n", [10, 25])
def test_diffusers_karras_timesteps_are_whole_steps(n):
    """The one difference left on Karras sigmas with a model that reads t smoothly:
    diffusers rounds each Karras timestep to a whole step, minsd's Denoiser does
    not. The timesteps differ by that rounding only, and it moves
    the result by more than float32 rounding would."""
    torch.manual_seed(0)
    noise = torch.randn(2, 4, 8, 8)
    scheduler = dpm_scheduler(karras=True)
    reference_eps, ours_eps = DummyEps(), DummyEps()
    expected = diffusers_states(scheduler, n, noise, reference_eps)
    states = minsd_states([scheduler.sigmas.double()], noise, ours_eps)
    ours_t, theirs_t = torch.tensor(ours_eps.seen_t), torch.tensor(reference_eps.seen_t)
    assert (
        torch.equal(ours_t.round(), theirs_t) and (ours_t - theirs_t).abs().max() <= 0.5
    )
    assert (ours_t != theirs_t).any()
    max_diff = (states[-1] - expected[-1]).abs().max().item()
    print(f"karras N={n}, fractional vs whole-step t: max |diff| {max_diff:.2e}")
    assert float32_bound(n, expected) < max_diff < 1e-2


@pytest.mark.parametrize("n", [10, 20])
def test_lower_order_final_and_euler_at_final_change_nothing_on_a_schedule_ending_in_0(
    n,
):
    """With final_sigmas_type="zero", diffusers' last step is first order whatever
    lower_order_final and euler_at_final say, and lower_order_final's other effect (at
    most second order at the second-to-last step) only matters for order 3: for order 2
    the four settings agree bit for bit, below and above its 15-step threshold, and
    equal minsd."""
    torch.manual_seed(0)
    noise = torch.randn(2, 4, 8, 8)
    settings = [(lower, euler) for lower in (True, False) for euler in (True, False)]
    results = [
        diffusers_states(
            dpm_scheduler(lower_order_final=lower, euler_at_final=euler),
            n,
            noise,
            DummyEps(),
        )[-1]
        for lower, euler in settings
    ]
    assert all(torch.equal(result, results[0]) for result in results[1:])
    scheduler = dpm_scheduler()
    scheduler.set_timesteps(n)
    ours = minsd_states([scheduler.sigmas.double()], noise, DummyEps())
    assert (ours[-1] - results[0]).abs().max().item() <= float32_bound(n, ours)


@pytest.mark.parametrize("n", [10, 20])
def test_final_sigmas_type_sigma_min(n):
    """final_sigmas_type="sigma_min" ends the schedule at the table's sigma_min = 0.0292
    instead of 0, so the last step is an ordinary one and diffusers' lower_order_final
    (below 15 steps) or euler_at_final makes it first order. minsd, given the same
    sigmas, keeps it second order (as diffusers does from 15 steps, or with both flags
    off); a first-order last step is a fresh call for it: sample_dpmpp_2m(sigmas[:-1]),
    then sample_dpmpp_2m(sigmas[-2:])."""
    torch.manual_seed(0)
    noise = torch.randn(2, 4, 8, 8)
    scheduler = dpm_scheduler(final_sigmas_type="sigma_min")
    scheduler.set_timesteps(n)
    sigmas = scheduler.sigmas.double()
    assert sigmas[-1].item() == pytest.approx(SIGMA_TABLE[0].item(), rel=1e-4)

    one_call = minsd_states([sigmas], noise, DummyEps())
    two_calls = minsd_states([sigmas[:-1], sigmas[-2:]], noise, DummyEps())
    bound = float32_bound(n, one_call)
    gap = (one_call[-1] - two_calls[-1]).abs().max().item()
    # the order of the last step matters: the test below can tell the two apart
    assert gap > 10 * bound

    def final(**config):
        return diffusers_states(
            dpm_scheduler(final_sigmas_type="sigma_min", **config), n, noise, DummyEps()
        )[-1]

    second_order_last = final(lower_order_final=False)
    euler_at_final = final(lower_order_final=False, euler_at_final=True)
    default = final()  # lower_order_final=True
    # diffusers lowers the last step below 15 steps only
    default_match = two_calls if n < 15 else one_call
    diffs = {
        "lower_order_final=False vs one call": (second_order_last - one_call[-1])
        .abs()
        .max()
        .item(),
        "euler_at_final=True vs two calls": (euler_at_final - two_calls[-1])
        .abs()
        .max()
        .item(),
        "lower_order_final=True vs the matching one": (default - default_match[-1])
        .abs()
        .max()
        .item(),
    }
    print(
        f"sigma_min N={n}: one vs two calls {gap:.2e} (bound {bound:.2e}); diffusers vs minsd {diffs}"
    )
    assert all(diff <= bound for diff in diffs.values())


# -- The sampler's own contract -----------------------------------------------------------------


def test_first_step_is_euler_and_a_step_to_0_returns_the_denoiser():
    """With no earlier denoised value a step is first order, DDIM, which on sigma is
    exactly Euler's step; a step to sigma = 0 (t = inf) lands on D(x; sigma) itself."""
    denoiser = sd15_denoiser(DummyEps())
    sigmas = get_sigmas(SIGMA_TABLE, 8, "karras")
    x = (
        torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        * sigmas[0].float()
    )
    for i in (0, 3, 6):
        step = sigmas[i : i + 2]
        assert_close(
            sample_dpmpp_2m(denoiser, x, step),
            sample_euler(denoiser, x, step),
            rtol=1e-5,
            atol=1e-5,
        )
    seen = []
    result = sample_dpmpp_2m(denoiser, x, sigmas, callback=seen.append)
    assert torch.equal(result, seen[-1]["denoised"])
