"""The denoiser D(x; sigma): SD's noise-predicting UNet seen through Karras et al. 2022.

SD 1.5 was trained as a discrete variance-preserving (VP) model: at training step t in
0..M-1 (M = 1000) a clean latent y becomes  sqrt(abar_t) y + sqrt(1 - abar_t) eps,  and
the UNet F_theta learns to predict the noise eps. Divided by sqrt(abar_t), this is
y + sigma_t eps  with

    sigma_t = sqrt((1 - abar_t) / abar_t),

the "variance-exploding" view that the Karras ODE works in. Table 1's VP column then
turns the eps-predictor into a denoiser, eq. (7):

    D(x; sigma) = c_skip x + c_out F_theta(c_in x; c_noise),
    c_skip = 1,  c_out = -sigma,  c_in = 1 / sqrt(sigma^2 + 1),  c_noise = t(sigma),

where t(sigma) = sigma^-1(sigma) is the (fractional) training step of the noise level
sigma, in 0..M-1: the timestep the UNet was trained to read. (Karras et al. write
c_noise = (M - 1) sigma^-1(sigma), with their sigma^-1 returning a time in [0, 1].)
"""

import torch
from torch import nn


def scaled_linear_alphas_cumprod(
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    num_train_timesteps: int = 1000,
) -> torch.Tensor:
    """SD's training schedule, (M,) float64: abar_t = prod_{s<=t} (1 - beta_s), with
    the betas evenly spaced in their square root."""
    sqrt_betas = torch.linspace(
        beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64
    )
    return torch.cumprod(1.0 - sqrt_betas**2, dim=0)


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - abar_t) / abar_t), the noise level of each training step:
    (M,), increasing."""
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


# The two directions between noise levels and training steps. Both are exact at the
# table's points; in between, sigma_to_t interpolates in log sigma, where the table is
# smooth (it spans 0.03..14.6), so that the UNet sees the timestep it was trained
# nearest to; t_to_sigma interpolates in sigma, because that is how diffusers builds
# its schedules from fractional timesteps, and the schedules must match its own.


def sigma_to_t(sigma: torch.Tensor, sigma_table: torch.Tensor) -> torch.Tensor:
    """t(sigma) = sigma^-1(sigma): the fractional training step of a noise level, by
    linear interpolation in log sigma.

    Exact at the table's points (t = 0 .. M-1); clamped to [0, M-1] outside the table.
    """
    log_table = sigma_table.log().to(sigma.device)  # (M,), increasing
    log_sigma = sigma.to(log_table.dtype).clamp(min=1e-10).log()
    # The table interval [low, low+1] that holds log_sigma.
    low = torch.searchsorted(log_table, log_sigma, right=True) - 1
    low = low.clamp(0, len(log_table) - 2)
    w = (log_sigma - log_table[low]) / (log_table[low + 1] - log_table[low])
    return low + w.clamp(0, 1)


def t_to_sigma(t: torch.Tensor, sigma_table: torch.Tensor) -> torch.Tensor:
    """sigma(t): the noise level of a fractional training step, by linear
    interpolation in sigma. float64."""
    t = t.to(torch.float64)
    low = t.floor().long().clamp(0, len(sigma_table) - 2)
    w = t - low
    table = sigma_table.to(torch.float64)
    return (1 - w) * table[low] + w * table[low + 1]


def vp_coefficients(
    sigma: torch.Tensor, sigma_table: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Karras et al. 2022, Table 1 (VP), for an eps-predictor: the four coefficients
    (c_skip, c_out, c_in, c_noise) at sigma, each of sigma's shape.

    c_noise = t(sigma) is the fractional training step in 0..M-1 (see `sigma_to_t`).
    """
    c_skip = torch.ones_like(sigma)
    c_out = -sigma
    # the square root: c_in x = sqrt(abar_t) x = x_t, the UNet's training input
    c_in = 1 / (sigma**2 + 1) ** 0.5
    c_noise = sigma_to_t(sigma.flatten(), sigma_table).reshape(sigma.shape)
    return c_skip, c_out, c_in, c_noise


class Denoiser(nn.Module):
    """D(x; sigma) for an eps-prediction model trained on a discrete VP schedule."""

    def __init__(self, unet: nn.Module, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.unet = unet
        # A plain float64 CPU tensor, not a buffer: Module.to(dtype) casts buffers,
        # and an fp16 table would shift every sigma of the schedule (sigma_max
        # 14.6146 -> 14.6172). Only the UNet follows .to().
        alphas_cumprod = alphas_cumprod.to(torch.float64).cpu()
        self.sigma_table = sigmas_from_alphas_cumprod(alphas_cumprod)  # (M,)

    @property
    def sigma_min(self) -> float:
        return self.sigma_table[0].item()

    @property
    def sigma_max(self) -> float:
        return self.sigma_table[-1].item()

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """D(x; sigma) of x: (B, C, h, w) at noise level sigma (a number or (B,)),
        with the text context: (B, T, D). Returns a tensor like x.

        The samplers keep the schedule on the CPU: the coefficients are computed
        there in float64, beside sigma, and sent to x's device without waiting for it.
        """
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1, 1)
        c_skip, c_out, c_in, c_noise = (
            c.to(x.device, torch.float32, non_blocking=True)
            for c in vp_coefficients(sigma, self.sigma_table)
        )
        # The network runs in its own dtype (fp16 on CUDA); the sampler's x stays fp32.
        dtype = next(self.unet.parameters()).dtype
        x_in = (c_in * x).to(dtype)  # c_in x: the UNet's training input x_t
        eps = self.unet(x_in, c_noise.flatten(), context.to(dtype)).float()
        # Karras et al. 2022, eq. (7): D(x) = c_skip x + c_out F(c_in x; c_noise)
        return c_skip * x + c_out * eps
