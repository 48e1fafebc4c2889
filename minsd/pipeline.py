"""Text to image: prompt -> CLIP -> guided denoiser -> sampler -> VAE decode.

The whole loop is `StableDiffusion.generate`, below. The CLIP tokenizer and text encoder
come from transformers and the VAE from diffusers; the UNet, the denoiser and the
samplers are minsd's own. The arguments' checks live in checks.py; the optional
speed-ups (compiling the UNet, a CPU thread count) in speed.py.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from .checks import (
    check_finite,
    check_generate_arguments,
    check_pixels,
    resolve_device,
    resolve_dtype,
    warn_long_prompts,
)
from .denoiser import Denoiser
from .scheduler import (
    get_sigmas,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
)
from .speed import compile_unet, recommended_num_threads
from .tokenizer import token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class Generation:
    """What `StableDiffusion.generate` returns. Tensors are float32 on the CPU."""

    images: list[Image.Image]
    pixels: torch.Tensor  # (B, 3, H, W) in [0, 1]
    latents: torch.Tensor  # (B, 4, H/8, W/8): the sampler's final x
    sigmas: torch.Tensor  # (N + 1,) the schedule that was sampled
    # per step: i, sigma, x, denoised (if asked for)
    steps: list[dict] = field(default_factory=list)


class StableDiffusion:
    """A text-to-image model: minsd's UNet, a CLIP text encoder and tokenizer, a VAE.

    The pipeline owns the modules it is given: it moves them to its device and dtype
    and sets them to eval mode, in place, as `Module.to` and `Module.eval` do.
    """

    def __init__(
        self,
        *,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer: "PreTrainedTokenizerBase",
        alphas_cumprod: torch.Tensor,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        name: str = "custom",
        preview_factors: torch.Tensor | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.name = name  # which weights drew the images, for captions and logs
        self.tokenizer = tokenizer
        self.denoiser = (
            Denoiser(unet, alphas_cumprod).to(self.device, self.dtype).eval()
        )
        self.text_encoder = text_encoder.to(self.device, self.dtype).eval()
        # diffusers warns on every dtype cast, even a no-op one
        if vae.dtype != self.dtype:
            vae = vae.to(dtype=self.dtype)
        self.vae = vae.to(self.device).eval()
        self.preview_factors = preview_factors  # (C, 3) latent -> RGB, see preview.py
        # 8 for SD 1.5
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    # -- the loop -------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
        steps: int = 20,
        guidance: float = 7.5,
        seed: int = 0,
        num_images: int = 1,
        spacing: str = "linspace",
        sampler: str = "euler",
        init_image: Image.Image | torch.Tensor | None = None,
        strength: float | None = None,
        return_steps: bool = False,
        progress: bool = True,
    ) -> Generation:
        """Sample `num_images` images per prompt; every argument is checked first.

        prompt: a string or a list of them. negative_prompt: what guidance steers away
        from, a string or one per prompt (default: the empty prompt, whose embedding is
        the unconditional one).
        height, width: in pixels, multiples of `vae_scale_factor` (default: the model's
        `default_size`, or init_image's size).
        steps, spacing: N, the number of steps, and how the schedule spaces them (one
        of `minsd.SPACINGS`, see `get_sigmas`).
        guidance: the scale g of classifier-free guidance; 1 turns it off.
        seed: seeds the starting noise; README, "Seeds and batches", says how the seed
        and the batch decide each image.
        sampler: the ODE solver, one of `minsd.SAMPLERS`.
        init_image, strength: img2img. The image (PIL, or (1 or len(prompts), 3, H, W)
        pixels in [0, 1]) is encoded to latents z, and the ODE starts from
        x = z + sigma_k n at step k = steps - int(steps * strength) of the schedule
        (diffusers' rule). strength, in (0, 1] (default 0.8), is the share of the
        steps that run: 1 starts from sigma_0, small values keep most of the image.
        return_steps: keep each step's i, sigma, x and denoised in `Generation.steps`.
        progress: show a progress bar.
        """
        prompts, height, width, strength = check_generate_arguments(
            prompt, negative_prompt, height, width, steps, guidance, seed, num_images,
            sampler, init_image, strength, self.default_size, self.vae_scale_factor
        )  # fmt: skip

        # 1. The schedule sigma_0 > ... > sigma_N = 0 (get_sigmas refuses, before any
        # work, a spacing or step count it cannot give); img2img runs its last steps.
        sigmas = get_sigmas(self.denoiser.sigma_table, steps, spacing)  # (N + 1,)
        if init_image is not None:
            sigmas = sigmas[steps - int(steps * strength) :]

        # 2. Text: the embedding c of each image's prompt, (B, T, D), and for guidance
        # that of its negative prompt.
        cond = self.encode_prompts(prompts).repeat_interleave(num_images, dim=0)
        uncond = None  # g = 1: no unconditional pass
        if guidance != 1.0:
            negatives = negative_prompts(negative_prompt, len(prompts))
            uncond = self.encode_prompts(negatives).repeat_interleave(num_images, dim=0)
        denoiser = CFGDenoiser(self.denoiser, cond, uncond, float(guidance))

        # 3. The starting point x_0 = sigma_0 n, n ~ N(0, I) from a seeded CPU
        # generator; img2img starts from the image's latents z: x = z + sigma_k n.
        f, channels = self.vae_scale_factor, self.unet.config.in_channels
        shape = (len(cond), channels, height // f, width // f)
        generator = torch.Generator("cpu").manual_seed(int(seed))
        noise = torch.randn(shape, generator=generator)  # n, (B, C, h, w)
        x = noise.to(self.device) * sigmas[0].item()
        if init_image is not None:
            z = self.encode(to_pixels(init_image))  # (1 or len(prompts), C, h, w)
            x = x + z.repeat_interleave(len(cond) // len(z), dim=0)

        # 4. Solve the ODE down to sigma = 0, recording each step if return_steps.
        recorded = []
        callback = recorded.append if return_steps else None
        if sampler == "euler":
            latents = sample_euler(denoiser, x, sigmas, callback, progress)
        elif sampler == "heun":
            latents = sample_heun(denoiser, x, sigmas, callback, progress)
        elif sampler == "dpmpp_2m":
            latents = sample_dpmpp_2m(denoiser, x, sigmas, callback, progress)
        elif sampler == "euler_ancestral":  # fresh noise continues the seed's stream
            latents = sample_euler_ancestral(
                denoiser, x, sigmas, callback, progress, generator=generator
            )
        where = f"{self.name}, {self.dtype} on {self.device}"
        check_finite(latents, "sampling produced NaN/inf latents", where)

        # 5. Latents -> pixels.
        pixels = self.decode(latents)
        check_finite(pixels, "the VAE decoded NaN/inf pixels", where)
        recorded = [on_cpu(step) for step in recorded]
        return Generation(to_pil(pixels), pixels, latents.cpu(), sigmas, recorded)

    __call__ = generate

    # -- text -----------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> CLIP's last hidden states c, (B, T, D); T = 77 for SD 1.5."""
        warn_long_prompts(self.tokenizer, prompts)
        ids = token_ids(self.tokenizer, prompts, self.device)  # (B, T)
        # No attention mask: SD 1.5 was trained with the padding tokens attended.
        return self.text_encoder(ids).last_hidden_state  # (B, T, D)

    # -- pixels <-> latents ---------------------------------------------------------

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> latents z, (B, 4, H/8, W/8).

        z is the mean of the VAE's posterior times the VAE's scaling factor, which
        brings it to about unit variance: the clean latent y that sampling ends at.
        """
        check_pixels(pixels)
        posterior = self.vae.encode(
            (pixels * 2 - 1).to(self.device, self.dtype)
        ).latent_dist
        return posterior.mean.float() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 4, h, w) latents -> (B, 3, 8h, 8w) pixels in [0, 1], float32, CPU."""
        # back to the VAE's own latent scale
        z = latents / self.vae.config.scaling_factor
        pixels = self.vae.decode(z.to(self.device, self.dtype)).sample
        return (pixels.float() / 2 + 0.5).clamp(0, 1).cpu()

    # -- the model's numbers, and compiling -----------------------------------------

    @property
    def unet(self) -> nn.Module:
        return self.denoiser.unet

    @property
    def default_size(self) -> int:
        """The image size the model was trained at: 512 for SD 1.5."""
        return self.unet.config.sample_size * self.vae_scale_factor

    @property
    def recommended_num_threads(self) -> int:
        """CPU threads that sample fastest with this model (see the function)."""
        return recommended_num_threads(self.unet)

    def compile(self, mode: str | None = None) -> "StableDiffusion":
        """torch.compile the UNet, the only heavy part of the loop (`compile_unet`)."""
        self.denoiser.unet = compile_unet(self.denoiser.unet, self.device, mode)
        return self


class CFGDenoiser(nn.Module):
    """Classifier-free guidance: D = D_uncond + g (D_cond - D_uncond).

    D_cond = D(x; sigma, c) and D_uncond = D(x; sigma, c_uncond). Ho & Salimans (2021)
    guide the predicted noise; with c_skip = 1 and c_out = -sigma, D is affine in eps,
    so guiding D is the same. g = 1 is the plain conditional model (one UNet pass).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        cond: torch.Tensor,
        uncond: torch.Tensor | None,
        guidance: float,
    ) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.cond = cond  # (B, T, D)
        self.uncond = uncond  # (B, T, D), or None at g = 1
        self.guidance = guidance

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.uncond is None:
            return self.denoiser(x, sigma, self.cond)
        # One UNet call on a batch of two halves: [unconditional, conditional].
        context = torch.cat([self.uncond, self.cond])  # (2B, T, D)
        denoised_uncond, denoised_cond = self.denoiser(
            torch.cat([x, x]), sigma, context
        ).chunk(2)
        return denoised_uncond + self.guidance * (denoised_cond - denoised_uncond)


def negative_prompts(
    negative_prompt: str | list[str] | None, n_prompts: int
) -> list[str]:
    """One negative prompt per prompt; None stands for the empty prompt.

    The empty prompt's embedding is the unconditional one.
    """
    if negative_prompt is None:
        return [""] * n_prompts
    if isinstance(negative_prompt, str):
        return [negative_prompt] * n_prompts
    return list(negative_prompt)


def on_cpu(step: dict) -> dict:
    """A sampler's step record with its tensors float32 on the CPU, to keep."""
    return {k: v.float().cpu() if torch.is_tensor(v) else v for k, v in step.items()}


def to_pixels(image: Image.Image | torch.Tensor) -> torch.Tensor:
    """A PIL image, or a tensor of pixels, -> (B, 3, H, W) float32 pixels on the CPU."""
    if isinstance(image, torch.Tensor):
        return image.detach().float().cpu()
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1)[None]  # (1, 3, H, W)


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) floats in [0, 1] -> PIL images, rounded to 8 bits."""
    # (B, H, W, 3)
    arrays = (pixels.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    return [Image.fromarray(a) for a in arrays]
