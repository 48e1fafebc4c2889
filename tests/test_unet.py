"""minsd's UNet against diffusers' UNet2DConditionModel: same keys, same outputs."""

import pytest
import torch
from conftest import TINY_UNET_CONFIGS, diffusers_unet
from torch.testing import assert_close

from minsd.unet import UNet, UNetConfig, timestep_embedding


def minsd_copy(reference) -> UNet:
    """minsd's UNet of the reference's sizes, loaded strictly from the reference's state
    dict."""
    cfg = UNetConfig(
        sample_size=reference.config.sample_size,
        block_out_channels=tuple(reference.config.block_out_channels),
        layers_per_block=reference.config.layers_per_block,
        num_heads=reference.config.attention_head_dim,
        cross_attention_dim=reference.config.cross_attention_dim,
        norm_num_groups=reference.config.norm_num_groups,
    )
    unet = UNet(cfg).eval()
    # no renaming, nothing extra or missing
    assert set(unet.state_dict()) == set(reference.state_dict())
    unet.load_state_dict(reference.state_dict(), strict=True)
    return unet


@pytest.mark.parametrize("name", sorted(TINY_UNET_CONFIGS))
# odd sizes: the up path must match the skips
@pytest.mark.parametrize("size", [(16, 16), (8, 24), (17, 13)])
def test_tiny_unet_matches_diffusers(name, size):
    """Same weights, same output as diffusers' UNet2DConditionModel, at odd latent sizes
    and fractional t."""
    reference = diffusers_unet(TINY_UNET_CONFIGS[name])
    unet = minsd_copy(reference)
    cfg = unet.config
    torch.manual_seed(1)
    x = torch.randn(3, 4, *size)
    t = torch.tensor([999.0, 500.25, 0.0])  # fractional timesteps are legal
    context = torch.randn(3, 7, cfg.cross_attention_dim)
    with torch.no_grad():
        expected = reference(x, t, context).sample
        actual = unet(x, t, context)
        other_t = unet(x, t.flip(0), context)
    assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    # the comparison can tell timesteps apart
    assert (other_t - expected).abs().max() > 1e-2


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_any_number_of_levels_matches_diffusers(levels):
    """SD 1.5's shape with fewer levels is diffusers' too: the top level's up block
    never upsamples, also when it is the only one (an UpBlock2D)."""
    cfg = UNetConfig(
        sample_size=8,
        block_out_channels=(16, 32, 32)[:levels],
        layers_per_block=1,
        num_heads=2,
        cross_attention_dim=16,
        norm_num_groups=4,
    )
    reference = diffusers_unet(cfg)
    unet = minsd_copy(reference)
    x, t, context = (
        torch.randn(2, 4, 8, 8),
        torch.tensor([10.0, 700.0]),
        torch.randn(2, 3, 16),
    )
    with torch.no_grad():
        assert_close(
            unet(x, t, context), reference(x, t, context).sample, rtol=1e-5, atol=1e-5
        )


def test_scalar_timestep_is_broadcast():
    """A 0-d timestep applies to every sample of the batch, as in diffusers."""
    reference = diffusers_unet(TINY_UNET_CONFIGS["tiny-b"])
    unet = minsd_copy(reference)
    x, context = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 24)
    with torch.no_grad():
        expected = reference(x, torch.tensor([321.0, 321.0]), context).sample
        assert_close(
            unet(x, torch.tensor(321.0), context), expected, rtol=1e-5, atol=1e-5
        )


def test_timestep_embedding_is_diffusers():
    """The sinusoidal embedding is diffusers' get_timestep_embedding with SD 1.5's
    flip_sin_to_cos, shift 0."""
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0.0, 1.5, 999.0])
    expected = get_timestep_embedding(
        t, 320, flip_sin_to_cos=True, downscale_freq_shift=0
    )
    assert_close(timestep_embedding(t, 320), expected)


@pytest.mark.slow
def test_full_sd15_unet_matches_diffusers():
    """The full SD 1.5 UNet (859,520,964 parameters, random weights) equals diffusers'
    on a 16x16 latent."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    reference = UNet2DConditionModel(  # diffusers' defaults are SD 1.5's UNet
        cross_attention_dim=768, attention_head_dim=8, sample_size=64
    ).eval()
    # SD 1.5's published count
    assert sum(p.numel() for p in reference.parameters()) == 859_520_964
    unet = UNet().eval()  # minsd's defaults
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964
    unet.load_state_dict(reference.state_dict(), strict=True)
    x, context = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 768)
    t = torch.tensor([642.5])
    with torch.no_grad():
        expected = reference(x, t, context).sample
        actual = unet(x, t, context)
    assert_close(actual, expected, rtol=1e-4, atol=1e-5)
