"""A 2D Gaussian mixture whose denoiser D(x; sigma) is known exactly: the book's toy
data.

Data: p_data(y) = sum_k pi_k N(y; mu_k, s_k^2 I). Noise of level sigma blurs each
component:

    p(x; sigma) = sum_k pi_k N(x; mu_k, (s_k^2 + sigma^2) I).

The ideal denoiser is the posterior mean E[y | x], a posterior-weighted average of
each component's own (Gaussian) posterior mean:

    D(x; sigma) = sum_k w_k(x) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)),
    w_k(x) = pi_k N(x; mu_k, (s_k^2 + sigma^2) I) / p(x; sigma),

and the score is grad log p(x; sigma) = (D(x; sigma) - x) / sigma^2 (Karras et al. 2022,
eq. 3). Everything works on (N, 2) tensors, so minsd's samplers run on it unchanged.

The helpers at the end (`starting_points`, `grid`, `trajectory`, `loglog_slope`) are
what the book's pages need to start samplers, draw densities, follow a sampler step by
step and measure its order of convergence.
"""

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .errors import InvalidValue


class GaussianMixture:
    def __init__(self, means, stds, weights=None) -> None:
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, 2)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)  # (K,)
        k = len(self.means)
        self.weights = (
            torch.full((k,), 1 / k, dtype=torch.float64)
            if weights is None
            else torch.as_tensor(weights)
        )

    def _log_joint(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """log pi_k + log N(x; mu_k, (s_k^2 + sigma^2) I) for every component: (N,
        K)."""
        var = self.stds**2 + torch.as_tensor(sigma, dtype=torch.float64) ** 2  # (K,)
        sq = ((x.double()[:, None, :] - self.means[None]) ** 2).sum(-1)  # (N, K)
        return self.weights.log() - sq / (2 * var) - torch.log(2 * math.pi * var)

    def log_density(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """log p(x; sigma): (N, 2) -> (N,)."""
        return torch.logsumexp(self._log_joint(x, sigma), dim=1)

    def posterior_weights(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """w_k(x) = P(component k | x) = pi_k N(x; mu_k, (s_k^2 + sigma^2) I) / p(x;
        sigma): (N, 2) -> (N, K)."""
        return torch.softmax(self._log_joint(x, sigma), dim=1)

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """The exact D(x; sigma) = E[y | x]: (N, 2) -> (N, 2), in x's dtype."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        w = self.posterior_weights(x, sigma)  # (N, K) posterior over components
        shrink = self.stds**2 / (self.stds**2 + sigma**2)  # (K,)
        xd = x.double()
        # (N, K, 2)
        per_component = self.means[None] + shrink[None, :, None] * (
            xd[:, None, :] - self.means[None]
        )
        return (w[:, :, None] * per_component).sum(1).to(x.dtype)

    __call__ = denoise  # a denoiser(x, sigma), as the samplers expect

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """grad log p(x; sigma) = (D(x; sigma) - x) / sigma^2."""
        return (self.denoise(x, sigma) - x) / torch.as_tensor(sigma, dtype=x.dtype) ** 2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples y of the data, p_data: (n, 2) float64."""
        return self.sample_with_components(n, generator)[0]

    def sample_with_components(self, n: int, generator: torch.Generator | None = None):
        """n samples of the data, (n, 2) float64, and the component each was drawn from,
        (n,) int64."""
        k = torch.multinomial(
            self.weights.float(), n, replacement=True, generator=generator
        )
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * noise, k


def example_mixture() -> GaussianMixture:
    """The book's running example: three blobs of different sizes and weights."""
    return GaussianMixture(
        means=[[-2.0, -1.0], [2.0, -1.0], [0.0, 2.0]],
        stds=[0.3, 0.5, 0.2],
        weights=[0.5, 0.3, 0.2],
    )


def starting_points(seed: int, n: int = 40, sigma_max: float = 20.0) -> torch.Tensor:
    """n starting points x_0 = sigma_max n of the toy's samplers, n ~ N(0, I) from a
    CPU generator seeded with `seed`: (n, 2), float64. Chapter 2 and its live widget
    start from the same points, so their errors are the same numbers."""
    generator = torch.Generator().manual_seed(seed)
    return sigma_max * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def grid(lim: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An n x n grid over [-lim, lim]^2: coords (n,) and points (n * n, 2),
    row-major (y outer, x inner).

    f(points).reshape(n, n) is then an image with rows along y, as imshow and
    contour expect.
    """
    coords = torch.linspace(-lim, lim, n, dtype=torch.float64)  # (n,)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")  # (n, n) each
    return coords, torch.stack([xs.flatten(), ys.flatten()], dim=1)  # (n,), (n * n, 2)


def trajectory(
    sampler: Callable, denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor
) -> torch.Tensor:
    """Run sampler(denoiser, x, sigmas) and keep x at every noise level:
    (len(sigmas), *x.shape).

    Entry i is the sampler's x_i at sigmas[i] (from its callback); the last is its
    result, at sigmas[-1].
    """
    path = []

    def keep(info: dict) -> None:
        path.append(info["x"].clone())

    x_last = sampler(denoiser, x, sigmas, callback=keep)
    if len(path) != len(sigmas) - 1:
        raise InvalidValue(
            f"expected the sampler to report {len(sigmas) - 1} steps, got {len(path)}"
        )
    return torch.stack([*path, x_last])


def loglog_slope(steps: Sequence[float], errors: Sequence[float]) -> float:
    """The least-squares slope of log(error) against log(steps): -p for an error that
    falls as steps^-p."""
    steps, errors = np.asarray(steps, dtype=float), np.asarray(errors, dtype=float)
    if (
        steps.shape != errors.shape
        or len(steps) < 2
        or (steps <= 0).any()
        or (errors <= 0).any()
    ):
        raise InvalidValue(
            "need at least two positive (steps, error) pairs, "
            f"got {steps!r} and {errors!r}"
        )
    slope, _ = np.polyfit(np.log(steps), np.log(errors), 1)
    return float(slope)
