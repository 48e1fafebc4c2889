"""The dtype policy: the schedule is float64 whatever the network's dtype; only the UNet's inputs are cast."""

import torch

from minsd.denoiser import Denoiser, scaled_linear_alphas_cumprod
from minsd.loading import load_pipeline
from minsd.scheduler import get_sigmas
from minsd.unet import UNet, UNetConfig

TINY = UNetConfig(
    sample_size=8,
    block_out_channels=(16, 32, 48, 48),
    layers_per_block=1,
    num_heads=4,
    cross_attention_dim=24,
    norm_num_groups=4,
)


def test_denoiser_to_fp16_leaves_the_sigma_table_float64():
    """Module.to(float16) casts the UNet, not the table: an fp16 table would move sigma_max 14.6146 -> 14.6172."""
    alphas_cumprod = scaled_linear_alphas_cumprod()
    reference = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5  # float64
    denoiser = Denoiser(UNet(TINY), alphas_cumprod).to(torch.float16)
    assert next(denoiser.unet.parameters()).dtype == torch.float16
    assert denoiser.sigma_table.dtype == torch.float64
    assert torch.equal(denoiser.sigma_table, reference)
    assert abs(denoiser.sigma_max - 14.614641) < 1e-6  # SD 1.5's sigma_max (diffusers' EulerDiscreteScheduler)


def test_fp16_pipeline_samples_the_same_sigmas_as_fp32():
    """The default model loaded in float16 (on the CPU) and in float32: bit-equal schedules for every spacing."""
    fp32 = load_pipeline(dtype=torch.float32, device="cpu")
    fp16 = load_pipeline(dtype=torch.float16, device="cpu")
    assert next(fp16.unet.parameters()).dtype == torch.float16
    for spacing in ("linspace", "leading", "trailing", "karras"):
        sigmas32 = get_sigmas(fp32.denoiser.sigma_table, 20, spacing)
        sigmas16 = get_sigmas(fp16.denoiser.sigma_table, 20, spacing)
        assert sigmas16.dtype == torch.float64
        assert torch.equal(sigmas16, sigmas32), spacing
