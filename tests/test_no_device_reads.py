"""The sampling loop never reads a value of a tensor on the model's device (on a GPU,
every such read waits for the GPU to finish: `.item()`, `if sigma_next == 0` on a CUDA
tensor, ...).

The meta device stands in for the GPU: its tensors have shapes but no values, so any
read of one raises. A whole guided loop with SD 1.5's UNet, run on the meta device with
the schedule on the CPU, proves the loop's Python decisions only ever look at CPU
values. (Counting real syncs needs a GPU: torch.cuda.set_sync_debug_mode, see
benchmarks/gpu.py.)
"""

import pytest
import torch
from conftest import ALPHAS_CUMPROD

from minsd.anatomy import meta_unet
from minsd.denoiser import Denoiser
from minsd.pipeline import CFGDenoiser
from minsd.scheduler import (
    get_sigmas,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_heun_churn,
)
from minsd.unet import UNetConfig


@pytest.mark.parametrize(
    "sampler",
    [
        sample_euler,
        sample_heun,
        sample_dpmpp_2m,
        sample_euler_ancestral,
        sample_heun_churn,
    ],
    ids=lambda f: f.__name__,
)
def test_sampling_loop_reads_no_device_values(sampler):
    """A guided SD 1.5 loop with its UNet on the meta device runs to the end: no step
    reads the value of a tensor on the model's device."""
    # SD 1.5, 512 px
    unet, x, _, context = meta_unet(UNetConfig(), latent_size=64, n_tokens=77)
    denoiser = CFGDenoiser(
        Denoiser(unet, ALPHAS_CUMPROD), context, context, guidance=7.5
    )
    sigmas = get_sigmas(denoiser.denoiser.sigma_table, 4, "karras")  # float64, CPU
    kwargs = {}
    if sampler in (sample_euler_ancestral, sample_heun_churn):
        # noise drawn on the CPU, sent over
        kwargs["generator"] = torch.Generator("cpu").manual_seed(0)
    if sampler is sample_heun_churn:
        kwargs["s_churn"] = 1.0
    out = sampler(denoiser, x * sigmas[0].item(), sigmas, **kwargs)
    assert out.device.type == "meta" and out.shape == x.shape
