"""The toy Gaussian mixture and the book's helpers, against analytic answers (the
samplers' orders of convergence on it: test_scheduler.py)."""

import pytest
import torch
from torch.distributions import MultivariateNormal
from torch.testing import assert_close

from minsd.scheduler import sample_euler, sample_heun
from minsd.toy import GaussianMixture, example_mixture, grid, loglog_slope, trajectory


def test_density_integrates_to_one_on_a_grid():
    """p(x; sigma) integrates to 1 over the plane, for the data (sigma = 0) and
    blurred."""
    coords, points = grid(lim=12.0, n=401)
    cell = (coords[1] - coords[0]) ** 2
    for sigma in (0.0, 0.5, 2.0):
        mass = example_mixture().log_density(points, sigma).exp().sum() * cell
        assert mass.item() == pytest.approx(1.0, abs=1e-3)


def test_grid_is_row_major_in_y():
    """grid's points run x fastest, so f(points).reshape(n, n) is an image with rows
    along y."""
    coords, points = grid(lim=1.0, n=3)
    assert coords.tolist() == [-1.0, 0.0, 1.0]
    assert points.shape == (9, 2)
    assert points[1].tolist() == [0.0, -1.0]  # x runs fastest
    assert points[3].tolist() == [-1.0, 0.0]


def test_score_is_the_gradient_of_the_log_density():
    """Karras et al. 2022, eq. (3): grad log p(x; sigma) = (D(x; sigma) - x) /
    sigma^2."""
    mixture = example_mixture()
    x = (
        torch.randn(
            64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
        )
        * 3
    )
    for sigma in (0.1, 1.0, 5.0):
        x_req = x.clone().requires_grad_(True)
        (autograd_score,) = torch.autograd.grad(
            mixture.log_density(x_req, sigma).sum(), x_req
        )
        assert_close(mixture.score(x, sigma), autograd_score)


def test_one_blob_denoiser_is_tweedies_formula():
    """Tweedie's formula E[y | x] = x + sigma^2 grad log p(x; sigma), with p(x; sigma)
    = N(mu, (s^2 + sigma^2) I) from torch.distributions and its gradient by autograd:
    the denoiser of one Gaussian blob is the posterior mean."""
    mu, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    blob = GaussianMixture(means=[mu.tolist()], stds=[s])
    x = 3 * torch.randn(
        16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    for sigma in (0.1, 1.5, 8.0):
        blurred = MultivariateNormal(
            mu, (s**2 + sigma**2) * torch.eye(2, dtype=torch.float64)
        )
        x_req = x.clone().requires_grad_(True)
        (score,) = torch.autograd.grad(blurred.log_prob(x_req).sum(), x_req)
        assert_close(blob(x, sigma), x + sigma**2 * score)


def test_trajectory_keeps_every_step_and_ends_at_the_result():
    """trajectory is the sampler's x at every sigma, ending at what the sampler
    returns."""
    mixture = example_mixture()
    x = 10 * torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([10.0, 3.0, 1.0, 0.0])
    for sampler in (sample_euler, sample_heun):
        path = trajectory(sampler, mixture, x, sigmas)
        assert path.shape == (4, 5, 2)
        assert_close(path[0], x)
        assert_close(path[-1], sampler(mixture, x, sigmas))
    # the last Euler step, down to sigma = 0, lands on the denoiser's output
    path = trajectory(sample_euler, mixture, x, sigmas)
    assert_close(path[-1], mixture(path[-2], sigmas[-2]), rtol=1e-5, atol=1e-5)


def test_loglog_slope_of_a_power_law():
    """loglog_slope of c n^-p is -p; an error of 0 has no logarithm and is refused."""
    steps = [4, 8, 16, 32]
    assert loglog_slope(steps, [3.0 * n**-1.5 for n in steps]) == pytest.approx(-1.5)
    with pytest.raises(ValueError, match="positive"):
        loglog_slope(steps, [1.0, 0.0, 1.0, 1.0])


def test_posterior_weights_are_bayes_rule():
    """w_k(x) = pi_k N(x; mu_k, (s_k^2 + sigma^2) I) / p(x; sigma), the normal density
    from torch.distributions."""
    mixture = example_mixture()
    x = torch.tensor([[0.3, -0.2], [-2.0, -1.0]], dtype=torch.float64)
    sigma = 0.7
    blurred = [
        MultivariateNormal(mu, (s**2 + sigma**2) * torch.eye(2, dtype=torch.float64))
        for mu, s in zip(mixture.means, mixture.stds, strict=True)
    ]
    # (N, K)
    joint = mixture.weights * torch.stack([p.log_prob(x).exp() for p in blurred], dim=1)
    assert_close(
        mixture.posterior_weights(x, sigma), joint / joint.sum(1, keepdim=True)
    )


def test_sample_with_components_matches_sample_and_weights():
    """Samples come from each component as often as its weight says, spread by its
    std."""
    mixture = example_mixture()
    y, k = mixture.sample_with_components(
        20_000, generator=torch.Generator().manual_seed(0)
    )
    assert_close(y, mixture.sample(20_000, generator=torch.Generator().manual_seed(0)))
    for j in range(3):
        assert (k == j).float().mean().item() == pytest.approx(
            mixture.weights[j].item(), abs=0.015
        )
        spread = ((y[k == j] - mixture.means[j]) ** 2).mean().sqrt()
        assert spread.item() == pytest.approx(mixture.stds[j].item(), rel=0.05)
