"""A cheap look at latents: a linear map from the 4 latent channels to RGB, no VAE
needed.

For SD 1.5 the widely used 4x3 factors come from a least-squares fit of decoded pixel
colours on latents. A model can ship its own (vae/preview_factors.json); see the default
model.
"""

import torch

# (4, 3): latent channel -> (R, G, B) contribution, for SD 1.5 latents (already times
# 0.18215).
SD15_PREVIEW_FACTORS = torch.tensor(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ]
)


def latents_to_rgb(
    latents: torch.Tensor, factors: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, C, h, w) or (C, h, w) latents -> RGB in [0, 1] of the same spatial size,
    float32 on the CPU."""
    factors = SD15_PREVIEW_FACTORS if factors is None else factors
    latents = latents.float().cpu()
    # (..., 3, h, w) in about [-1, 1]
    rgb = torch.einsum("...chw,cr->...rhw", latents, factors.float())
    return (rgb / 2 + 0.5).clamp(0, 1)
