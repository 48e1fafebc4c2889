"""The dtype policy: the schedule is float64 whatever the network's dtype; only the
UNet's inputs are cast."""

import torch
from conftest import ALPHAS_CUMPROD, SIGMA_TABLE, TINY_UNET_CONFIGS

from minsd.denoiser import Denoiser
from minsd.loading import load_pipeline
from minsd.scheduler import get_sigmas
from minsd.unet import UNet


def test_denoiser_to_fp16_leaves_the_sigma_table_float64():
    """Module.to(float16) casts the UNet, not the table: an fp16 table would move
    sigma_max 14.6146 -> 14.6172."""
    denoiser = Denoiser(UNet(TINY_UNET_CONFIGS["tiny-b"]), ALPHAS_CUMPROD).to(
        torch.float16
    )
    assert next(denoiser.unet.parameters()).dtype == torch.float16
    assert denoiser.sigma_table.dtype == torch.float64
    # the float64 table, untouched
    assert torch.equal(denoiser.sigma_table, SIGMA_TABLE)
    # SD 1.5's sigma_max (diffusers' EulerDiscreteScheduler)
    assert abs(denoiser.sigma_max - 14.614641) < 1e-6


def test_fp16_pipeline_samples_the_same_sigmas_as_fp32():
    """The default model loaded in float16 (on the CPU) and in float32: bit-equal
    schedules for every spacing."""
    fp32 = load_pipeline(dtype=torch.float32, device="cpu")
    fp16 = load_pipeline(dtype=torch.float16, device="cpu")
    assert next(fp16.unet.parameters()).dtype == torch.float16
    for spacing in ("linspace", "leading", "trailing", "karras"):
        sigmas32 = get_sigmas(fp32.denoiser.sigma_table, 20, spacing)
        sigmas16 = get_sigmas(fp16.denoiser.sigma_table, 20, spacing)
        assert sigmas16.dtype == torch.float64
        assert torch.equal(sigmas16, sigmas32), spacing
