"""Cross-attention maps: where in the image each token of the prompt is read.

In every transformer block the image's positions attend to the prompt's tokens (`attn2`,
chapter 4): position p takes a weighted mean of the tokens' values, with weights

    softmax_j(q_p . k_j / sqrt(hs)),  summing to 1 over the prompt's T tokens j.

Read for one token j across all positions, these weights form a map: how much of what
each position takes from the prompt comes from token j. `recording_cross_attention`
collects them, averaged over the heads, while the UNet runs; `cross_attention_maps` does
so for one generation and returns per-token maps that can be averaged over layers and
steps and drawn over the image.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_one_image
from .errors import InvalidValue
from .pipeline import Generation, StableDiffusion
from .tokenizer import token_ids
from .unet import Attention


def cross_attention_layers(unet: nn.Module) -> list[tuple[str, Attention]]:
    """The UNet's cross-attention modules (each transformer block's attn2), in order."""
    return [
        (name, module)
        for name, module in unet.named_modules()
        if name.endswith(".attn2")
    ]


@contextmanager
def recording_cross_attention(
    unet: nn.Module,
) -> Iterator[dict[str, list[torch.Tensor]]]:
    """While active: {layer name: [the probabilities of each UNet call]}.

    Each is (B, N, T): the softmax over the T tokens for each of the layer's
    N = h_l * w_l positions, averaged over heads, float32 on the CPU. Outside it, the
    layers run as before (one fused scaled_dot_product_attention, nothing kept): the
    hooks are removed on the way out.
    """
    recorded: dict[str, list[torch.Tensor]] = {}
    layers = cross_attention_layers(unet)
    for name, module in layers:
        recorded[name] = []
        module.on_probs = lambda probs, calls=recorded[name]: calls.append(
            probs.mean(dim=1).float().cpu()
        )
    try:
        yield recorded
    finally:
        for _, module in layers:
            module.on_probs = None


@dataclass
class AttentionMaps:
    """The cross-attention of one generation's image (its conditional half)."""

    # the T tokens the text encoder read: start, the prompt's, end, padding
    tokens: list[str]
    # layer name -> (calls, T, h_l, w_l): one map per UNet call and token
    maps: dict[str, torch.Tensor]
    generation: Generation

    def token_maps(
        self,
        layers: Sequence[str] | None = None,
        calls: Sequence[int] | slice | None = None,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """(T, H, W): each token's map, averaged over `layers` and `calls`.

        layers, calls: which to average (default all). Each layer's map is first
        upsampled (bilinear) to `size` (default the image's).
        """
        size = size or tuple(self.generation.pixels.shape[-2:])
        calls = slice(None) if calls is None else calls
        # each (calls, T, h_l, w_l)
        per_layer = [self.maps[name][calls] for name in (layers or self.maps)]
        # (T, H, W)
        upsampled = [
            F.interpolate(m, size=size, mode="bilinear").mean(dim=0) for m in per_layer
        ]
        return torch.stack(upsampled).mean(dim=0)


def cross_attention_maps(
    pipe: StableDiffusion, prompt: str, **generate_args: object
) -> AttentionMaps:
    """Generate one image for `prompt` and return its per-token cross-attention maps.

    generate_args: any of generate's keyword arguments but num_images. The maps are
    one per layer and UNet call (one call a step for euler and dpmpp_2m).
    """
    check_one_image(prompt, generate_args)
    with recording_cross_attention(pipe.unet) as recorded:
        generation = pipe.generate(prompt, **generate_args)
    h, w = generation.latents.shape[-2:]
    maps = {}
    for name, calls in recorded.items():
        # (calls, N, T): the last sample is the conditional one
        probs = torch.stack([p[-1] for p in calls])
        h_l, w_l = layer_size(h, w, probs.shape[1])
        # (calls, T, h_l, w_l)
        maps[name] = probs.transpose(1, 2).reshape(len(calls), -1, h_l, w_l)
    ids = token_ids(pipe.tokenizer, [prompt])[0]  # (T,)
    tokens = pipe.tokenizer.convert_ids_to_tokens(ids.tolist())
    return AttentionMaps(tokens, maps, generation)


def layer_size(h: int, w: int, n_positions: int) -> tuple[int, int]:
    """The (h_l, w_l) of a layer with n_positions: (h, w) halved k times, rounded up."""
    h_l, w_l = h, w
    for _ in range(8):
        if h_l * w_l == n_positions:
            return h_l, w_l
        h_l, w_l = (h_l + 1) // 2, (w_l + 1) // 2
    raise InvalidValue(f"no level of a {h} x {w} latent has {n_positions} positions")
