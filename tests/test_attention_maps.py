"""Cross-attention maps: recorded only when asked, probabilities over tokens, the same
image either way."""

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_UNET_CONFIGS
from torch.testing import assert_close

from minsd.attention_maps import (
    cross_attention_layers,
    cross_attention_maps,
    recording_cross_attention,
)
from minsd.loading import load_pipeline
from minsd.unet import UNet

# 4 levels, cross-attention on the first three down and last three up
CFG = TINY_UNET_CONFIGS["tiny-a"]


@pytest.fixture(scope="module")
def pipe(tiny_folder):
    return load_pipeline(tiny_folder, device="cpu")


def test_recorded_probabilities_sum_to_one_over_tokens():
    """Each recorded row is a softmax over the prompt's tokens: non-negative, summing to
    1."""
    torch.manual_seed(0)
    unet = UNet(CFG).eval()
    x, t, context = (
        torch.randn(2, 4, 8, 8),
        torch.tensor([500.0]),
        torch.randn(2, 7, CFG.cross_attention_dim),
    )
    with torch.no_grad(), recording_cross_attention(unet) as recorded:
        unet(x, t, context)
    # down, mid, up
    assert len(recorded) == len(cross_attention_layers(unet)) == 3 * 2 + 1 + 3 * 3
    for probs in (calls[0] for calls in recorded.values()):
        assert probs.shape[0] == 2 and probs.shape[-1] == 7  # (B, N, T)
        assert (probs >= 0).all()
        assert_close(probs.sum(dim=-1), torch.ones(probs.shape[:-1]))


def test_scaled_dot_product_attention_runs_unless_recording(monkeypatch):
    """Off, every attention is one fused SDPA call; while recording, the
    cross-attentions are written out and hand over their probabilities; after it, the
    hooks are gone."""
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(
        F,
        "scaled_dot_product_attention",
        lambda *a, **k: calls.append(1) or sdpa(*a, **k),
    )
    unet = UNet(CFG).eval()
    n_attention = sum(
        1 for name, _ in unet.named_modules() if name.endswith((".attn1", ".attn2"))
    )
    x, t, context = (
        torch.randn(1, 4, 8, 8),
        torch.tensor([10.0]),
        torch.randn(1, 5, CFG.cross_attention_dim),
    )
    with torch.no_grad():
        unet(x, t, context)
        assert len(calls) == n_attention
        with recording_cross_attention(unet):
            unet(x, t, context)
        assert len(calls) == n_attention + n_attention // 2  # the self-attentions only
        unet(x, t, context)
    assert len(calls) == 2 * n_attention + n_attention // 2
    assert all(module.on_probs is None for _, module in cross_attention_layers(unet))


def test_recording_does_not_change_the_image(pipe):
    """The written-out attention equals SDPA to float rounding: the same pixels with and
    without maps."""
    plain = pipe("a red circle", steps=4, seed=2, height=64, width=48, progress=False)
    mapped = cross_attention_maps(
        pipe, "a red circle", steps=4, seed=2, height=64, width=48, progress=False
    )
    assert_close(mapped.generation.pixels, plain.pixels, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("height", "width"), [(64, 64), (80, 48)])
def test_map_shapes_per_layer(pipe, height, width):
    """One map per UNet call and token at each layer's resolution: the latent halved per
    level, rounded up."""
    maps = cross_attention_maps(
        pipe, "a red circle", steps=3, height=height, width=width, progress=False
    )
    h, w = height // 8, width // 8
    sizes = {
        0: (h, w),
        1: (-(-h // 2), -(-w // 2)),
        2: (-(-h // 4), -(-w // 4)),
        3: (-(-h // 8), -(-w // 8)),
    }
    level_of = {
        "down_blocks.0": 0,
        "down_blocks.1": 1,
        "down_blocks.2": 2,
        "mid_block": 3,
    }
    level_of |= {"up_blocks.1": 2, "up_blocks.2": 1, "up_blocks.3": 0}
    T = pipe.tokenizer.model_max_length
    assert len(maps.tokens) == T and maps.tokens[0] == "<|startoftext|>"
    for name, m in maps.maps.items():
        level = next(
            level for prefix, level in level_of.items() if name.startswith(prefix + ".")
        )
        # 3 steps, guidance: the conditional half
        assert m.shape == (3, T, *sizes[level]), name
    assert maps.token_maps().shape == (T, height, width)
