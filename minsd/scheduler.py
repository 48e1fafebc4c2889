"""Noise schedules (which sigmas to visit) and samplers (how to step between them).

A schedule is an explicit tensor  sigma_0 > sigma_1 > ... > sigma_{N-1} > sigma_N = 0.
A sampler is a stateless function of (denoiser, x, sigmas): call it twice, get the same
answer. The state x is float32 on its device (the GPU's, say); the schedule stays
float64 on the CPU, so the loop's step sizes and its tests such as `sigma_next == 0` are
computed there, never waiting for the GPU (a 0-d CPU tensor enters a GPU operation as a
plain number).

The probability-flow ODE of Karras et al. (2022), eq. (1) with sigma(t) = t, and the
score of eq. (3), grad log p(x; sigma) = (D(x; sigma) - x) / sigma^2, give

    dx/dsigma = (x - D(x; sigma)) / sigma.

Euler's method on it is the update that SD samples with (Karras et al., Algorithm 1
without the Heun correction):

    x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (x_i - D(x_i; sigma_i)) / sigma_i.
"""

from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm

from .checks import check_num_steps, check_spacing
from .denoiser import t_to_sigma
from .errors import InvalidType, InvalidValue

# denoiser(x, sigma) -> D(x; sigma), x: (B, C, h, w), sigma: a 0-d tensor
DenoiserFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def spaced_timesteps(
    num_steps: int, spacing: str, num_train_timesteps: int = 1000, steps_offset: int = 1
) -> torch.Tensor:
    """The training steps t_0 > t_1 > ... > t_{N-1} a discrete schedule visits, (N,).

    linspace: evenly from M-1 down to 0, fractional in between (diffusers' default
              for SD 1.5).
    leading:  multiples of M // N counted up from 0, shifted by steps_offset (the
              original SD repo).
    trailing: multiples of M / N counted down from M, minus 1 (Lin et al. 2024;
              starts at M-1).
    """
    check_num_steps(num_steps)
    M, N = num_train_timesteps, num_steps
    if spacing in ("leading", "trailing") and N > M:  # whole steps: more would repeat
        raise InvalidValue(f"{spacing!r} spacing: at most {M} steps, got {N}")
    if spacing == "linspace":
        # From M-1 down, so that one step starts from pure noise (diffusers'
        # linspace(0, M-1, 1) gives t = 0).
        t = torch.linspace(M - 1, 0, N, dtype=torch.float64)
    elif spacing == "leading":
        t = (torch.arange(N, dtype=torch.float64) * (M // N)).round().flip(0)
        t = t + steps_offset
    elif spacing == "trailing":
        t = (M * torch.arange(N, 0, -1, dtype=torch.float64) / N).round() - 1
    else:
        raise InvalidValue(f"unknown timestep spacing {spacing!r} (see get_sigmas)")
    if t[0] > M - 1:  # leading at N = M: steps_offset pushes t_0 past the table
        raise InvalidValue(
            f"{spacing!r} spacing with {N} steps would start at t = {t[0]:.0f}, past "
            f"the last training step {M - 1}; use at most {N - 1} steps"
        )
    return t


def karras_sigmas(
    num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0
) -> torch.Tensor:
    """Karras et al. 2022, eq. (5): the N noise levels, without the final 0,

        sigma_i = (max_inv_rho + i/(N-1) (min_inv_rho - max_inv_rho))^rho,

    with max_inv_rho = sigma_max^(1/rho), min_inv_rho = sigma_min^(1/rho).

    rho = 7 spends more steps at low noise.
    """
    check_num_steps(num_steps)
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    max_inv_rho, min_inv_rho = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def get_sigmas(
    sigma_table: torch.Tensor, num_steps: int, spacing: str = "linspace"
) -> torch.Tensor:
    """The schedule for num_steps model evaluations: (N + 1,) float64, ending in 0.

    sigma_table: the model's training noise levels, (M,) increasing (see denoiser.py).
    spacing: 'linspace', 'leading' or 'trailing' timesteps, or 'karras' (rho = 7
    between the table's sigma_min and sigma_max).
    """
    check_spacing(spacing)
    table = sigma_table.detach().cpu().to(torch.float64)  # tiny: built on the CPU
    if spacing == "karras":
        sigmas = karras_sigmas(num_steps, table[0].item(), table[-1].item())
    else:
        sigmas = t_to_sigma(spaced_timesteps(num_steps, spacing, len(table)), table)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def progress_bar(sigmas: torch.Tensor, progress: bool, desc: str) -> Iterable[int]:
    """The steps i = 0 .. N-1 of a schedule, shown as a progress bar if asked for."""
    return tqdm(range(len(sigmas) - 1), disable=not progress, desc=desc, unit="step")


def schedule_on_cpu(sigmas: torch.Tensor) -> torch.Tensor:
    """The samplers' view of a schedule: float64 on the CPU (copied if elsewhere)."""
    return sigmas.detach().to("cpu", torch.float64)


@torch.no_grad()
def sample_euler(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Euler's method on dx/dsigma = (x - D(x; sigma)) / sigma, from sigmas[0] down
    to sigmas[-1].

    x: (B, C, h, w) noise already scaled to sigmas[0]. The state is kept in float32.
    callback, if given, receives {"i", "sigma", "sigma_next", "x", "denoised"} at
    every step.
    """
    x = x.float()
    sigmas = schedule_on_cpu(sigmas)
    for i in progress_bar(sigmas, progress, "Euler"):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma)  # D(x_i; sigma_i)
        step = dict(i=i, sigma=sigma, sigma_next=sigma_next, x=x, denoised=denoised)
        if callback is not None:
            callback(step)
        d = (x - denoised) / sigma  # dx/dsigma at (x_i, sigma_i)
        dt = sigma_next - sigma  # negative: we walk towards sigma = 0
        x = x + d * dt  # x_{i+1}
    return x


@torch.no_grad()
def sample_heun(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Heun's second-order method, Karras et al. 2022, Algorithm 1 (deterministic).

    An Euler step, then a correction with the slope at its end point; the last step
    (to sigma = 0) stays an Euler step. Costs 2N - 1 denoiser calls for N steps.
    """
    x = x.float()
    sigmas = schedule_on_cpu(sigmas)
    for i in progress_bar(sigmas, progress, "Heun"):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma)
        step = dict(i=i, sigma=sigma, sigma_next=sigma_next, x=x, denoised=denoised)
        if callback is not None:
            callback(step)
        d = (x - denoised) / sigma  # slope at the start
        dt = sigma_next - sigma
        x_euler = x + d * dt
        if sigma_next == 0:
            x = x_euler
        else:
            # slope at the end
            d_next = (x_euler - denoiser(x_euler, sigma_next)) / sigma_next
            x = x + (d + d_next) / 2 * dt  # trapezoidal rule
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2M), Lu et al. 2022 (arXiv 2211.01095), Algorithm 2, on sigma:
    second order, one call a step.

    In t = -log sigma (the paper's lambda) the ODE is dx/dt = D(x; sigma) - x, so a
    step of h = t_next - t is exactly x_next = e^-h x + int_t^t_next e^(s - t_next)
    D ds, with e^-h = sigma_next / sigma. Holding D at D_i gives the first-order
    step x_next = (sigma_next / sigma) x - (e^-h - 1) D_i (DDIM; here also Euler's
    step). 2M takes D instead on the line through the last two denoised values, at
    the step's midpoint t + h/2: D_d = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_last
    / h. The first step, with no D_{i-1}, is first order.

    A step to sigma = 0 returns D(x_i; sigma_i): there t_next = inf, e^-h = 0 and r
    = 0, so the first-order step lands on D and the second-order one is undefined.
    No other step is lowered. diffusers' lower_order_final is not mirrored: on a
    schedule ending in 0 it changes nothing for order 2 (its last step is the one
    above anyway); on one ending at sigma_min > 0 its first-order last step is two
    calls here, sigmas[:-1] then sigmas[-2:].
    """
    x = x.float()
    sigmas = schedule_on_cpu(sigmas)
    # D(x_{i-1}; sigma_{i-1}): the one value the multistep method remembers (this call)
    old_denoised = None
    for i in progress_bar(sigmas, progress, "DPM++ 2M"):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma)  # D(x_i; sigma_i), (B, C, h, w)
        step = dict(i=i, sigma=sigma, sigma_next=sigma_next, x=x, denoised=denoised)
        if callback is not None:
            callback(step)
        if sigma_next == 0:
            x = denoised  # t_next = inf: the step below with e^-h = 0
        else:
            t, t_next = -sigma.log(), -sigma_next.log()
            h = t_next - t
            if old_denoised is None:
                # Algorithm 2's first step: D held constant (DPM-Solver++1, i.e. DDIM)
                denoised_d = denoised
            else:
                h_last = t + sigmas[i - 1].log()  # t_i - t_{i-1}
                r = h_last / h  # Algorithm 2: r_i = h_{i-1} / h_i
                # Algorithm 2: D_i = (1 + 1/(2 r_i)) denoised - 1/(2 r_i) old_denoised
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            # Algorithm 2, in VP variables (x_t = alpha_t x, sigma_t = alpha_t sigma):
            #     x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}}
            #               - alpha_{t_i} (e^{-h_i} - 1) D_i,
            # which divided by alpha_{t_i} is, in our variables:
            x = (sigma_next / sigma) * x - torch.expm1(-h) * denoised_d
        old_denoised = denoised
    return x


# -- Stochastic samplers --------------------------------------------------------------
# Both take the fresh noise they add from `generator`, drawn on the generator's device
# (a seeded CPU generator gives the same images on every device), so that a run is
# reproducible and stateless.


def fresh_noise(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """n ~ N(0, I) shaped like x, float32 on x's device, drawn from `generator` (on its
    own device)."""
    if not isinstance(generator, torch.Generator):
        raise InvalidType(
            "a stochastic sampler needs a seeded torch.Generator for its noise, got "
            f"{generator!r}; e.g. generator=torch.Generator('cpu').manual_seed(0)"
        )
    noise = torch.randn(
        x.shape, generator=generator, device=generator.device, dtype=torch.float32
    )
    return noise.to(x.device)


def ancestral_step(
    sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the step sigma -> sigma_next into a deterministic part down to
    sigma_down and fresh noise sigma_up.

    sigma_up^2 = eta^2 sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2 (eta = 1:
    DDPM's posterior noise, Ho et al. 2020) and sigma_down^2 + sigma_up^2 =
    sigma_next^2, so the noise level lands on sigma_next.
    """
    sigma_up = torch.minimum(
        sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
    )
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


@torch.no_grad()
def sample_euler_ancestral(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    *,
    generator: torch.Generator,
    eta: float = 1.0,
) -> torch.Tensor:
    """Euler ancestral: an Euler step down to sigma_down < sigma_next, then fresh
    noise back up to sigma_next.

    Each step forgets part of x's noise and draws new noise instead, so the result
    depends on every draw from `generator`, not only on the starting x. eta = 0 is
    plain Euler. One denoiser call a step.
    """
    x = x.float()
    sigmas = schedule_on_cpu(sigmas)
    for i in progress_bar(sigmas, progress, "Euler ancestral"):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma)  # D(x_i; sigma_i)
        step = dict(i=i, sigma=sigma, sigma_next=sigma_next, x=x, denoised=denoised)
        if callback is not None:
            callback(step)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        d = (x - denoised) / sigma  # dx/dsigma at (x_i, sigma_i)
        x = x + d * (sigma_down - sigma)  # Euler, down to sigma_down
        if sigma_next > 0:
            # back up to sigma_next with new noise
            x = x + fresh_noise(x, generator) * sigma_up
    return x


@torch.no_grad()
def sample_heun_churn(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    *,
    generator: torch.Generator,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Karras et al. 2022, Algorithm 2: Heun's method with "churn", noise added
    before every step.

    Each step first raises the noise level from sigma_i to sigma_hat = (1 + gamma_i)
    sigma_i with fresh noise, gamma_i = min(s_churn / N, sqrt(2) - 1) for sigma_i in
    [s_tmin, s_tmax] (else 0), then takes a Heun step from sigma_hat to sigma_{i+1}.
    s_churn = 0 is Algorithm 1 (`sample_heun`). The callback receives sigma =
    sigma_hat and x = x_hat, the point the denoiser was called at.
    """
    x = x.float()
    sigmas = schedule_on_cpu(sigmas)
    n_steps = len(sigmas) - 1
    for i in progress_bar(sigmas, progress, "Heun churn"):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        # Algorithm 2, lines 4-6: gamma_i, then x_hat = x_i + sqrt(sigma_hat^2
        # - sigma_i^2) eps, eps ~ N(0, s_noise^2 I)
        gamma = min(s_churn / n_steps, 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            eps = fresh_noise(x, generator) * s_noise
            x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
        # lines 7-8: an Euler step from sigma_hat
        denoised = denoiser(x, sigma_hat)  # D(x_hat; sigma_hat)
        step = dict(i=i, sigma=sigma_hat, sigma_next=sigma_next, x=x, denoised=denoised)
        if callback is not None:
            callback(step)
        d = (x - denoised) / sigma_hat
        dt = sigma_next - sigma_hat
        x_euler = x + d * dt
        if sigma_next == 0:
            x = x_euler
        else:
            # lines 9-11: the second-order correction with the slope at sigma_{i+1}
            d_next = (x_euler - denoiser(x_euler, sigma_next)) / sigma_next
            x = x + (d + d_next) / 2 * dt
    return x
