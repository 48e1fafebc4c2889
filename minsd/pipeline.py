"""Text to image: prompt -> CLIP embeddings -> guided denoiser -> Euler sampler -> VAE
decode.

The CLIP tokenizer and text encoder come from transformers and the VAE from diffusers;
the UNet, the denoiser and the sampler are minsd's own. The whole loop is in
`StableDiffusion.generate`.
"""

import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from .checks import check_num_steps, is_integer, resolve_device, resolve_dtype
from .choices import SAMPLERS, SPACINGS
from .denoiser import Denoiser
from .scheduler import (
    get_sigmas,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def compile_unet(
    unet: nn.Module, device: torch.device, mode: str | None = None
) -> nn.Module:
    """torch.compile a UNet for `device`. Optional: compiling takes minutes.

    CUDA: channels_last and mode "reduce-overhead" (CUDA graphs: the whole UNet
    replays as one launch, with its buffers allocated once). CPU: inductor with
    weight freezing, which folds the weights into the compiled graph (see
    `FrozenCompiledUNet`). Each new latent size (or batch size) compiles its own
    graph: static shapes give the fastest kernels.
    """
    if device.type == "cuda":
        unet.to(memory_format=torch.channels_last)
        return torch.compile(
            unet, mode=mode or "reduce-overhead", fullgraph=True, dynamic=False
        )
    return FrozenCompiledUNet(unet, mode or "default")


class FrozenCompiledUNet(nn.Module):
    """A UNet compiled by inductor with its weights frozen into the graph, for
    inference on a CPU.

    Freezing is an inductor setting, read whenever a new input shape is traced and
    compiled, so it is switched on around this module's own calls and nowhere else
    in the process. (Passing it as torch.compile(options={"freezing": True}) does
    not freeze: dynamo reads it before the options apply.) The weights are constants
    of the compiled graph: changing them afterwards changes nothing.
    """

    def __init__(self, unet: nn.Module, mode: str = "default") -> None:
        super().__init__()
        self.config = unet.config
        self.compiled = torch.compile(unet, mode=mode, fullgraph=True, dynamic=False)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        from torch._inductor import config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.compiled(x, t, context)


# Below this many UNet parameters, sampling on a CPU is bound by per-operator
# overhead, not arithmetic.
SMALL_UNET_PARAMETERS = 50_000_000


def recommended_num_threads(unet: nn.Module) -> int:
    """CPU threads (torch.set_num_threads) that sample fastest with `unet`; a choice
    for the caller to apply.

    A small UNet (the default model: 3.2 M parameters, 40-80 us per operator) gains
    nothing from a second thread, and on a busy machine every operator waits for the
    slowest thread: on 2-core machines, 20 steps of the default model took 0.33 s on
    one thread and 0.38 s on two when quiet, 0.53 s and 0.88 s beside two busy
    processes, and up to 40x longer on AMD EPYC. A large UNet (SD 1.5: 860 M
    parameters) keeps every core busy in each operator: keep torch's default.
    """
    n_parameters = sum(p.numel() for p in unet.parameters())
    return 1 if n_parameters < SMALL_UNET_PARAMETERS else torch.get_num_threads()


class CFGDenoiser(nn.Module):
    """Classifier-free guidance: D = D(x; sigma, uncond) + g (D(x; sigma, cond) -
    D(x; sigma, uncond)).

    Ho & Salimans (2022) guide the predicted noise; with c_skip = 1 and c_out =
    -sigma, D is affine in eps, so guiding D is the same. g = 1 is the plain
    conditional model (one UNet pass).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        cond: torch.Tensor,
        uncond: torch.Tensor | None,
        guidance: float,
    ) -> None:
        super().__init__()
        self.denoiser, self.cond, self.uncond, self.guidance = (
            denoiser,
            cond,
            uncond,
            guidance,
        )

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.uncond is None:
            return self.denoiser(x, sigma, self.cond)
        # One UNet call on a batch of two halves: [unconditional, conditional].
        context = torch.cat([self.uncond, self.cond])  # (2B, T, D)
        denoised_uncond, denoised_cond = self.denoiser(
            torch.cat([x, x]), sigma, context
        ).chunk(2)
        return denoised_uncond + self.guidance * (denoised_cond - denoised_uncond)


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
    """A text-to-image model: minsd's UNet with a CLIP text encoder, a tokenizer and a
    VAE."""

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

    @property
    def unet(self) -> nn.Module:
        return self.denoiser.unet

    @property
    def default_size(self) -> int:
        """The image size the model was trained at: 512 for SD 1.5."""
        return self.unet.config.sample_size * self.vae_scale_factor

    @property
    def recommended_num_threads(self) -> int:
        """CPU threads that sample fastest with this model (see
        `recommended_num_threads`)."""
        return recommended_num_threads(self.unet)

    def compile(self, mode: str | None = None) -> "StableDiffusion":
        """torch.compile the UNet, the only heavy part of the loop (see
        `compile_unet`)."""
        self.denoiser.unet = compile_unet(self.denoiser.unet, self.device, mode)
        return self

    # -- text -----------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> CLIP's last hidden states, (B, T, D); T =
        tokenizer.model_max_length (77 for SD)."""
        max_length = self.tokenizer.model_max_length
        ids = self.tokenizer(
            prompts, padding="max_length", max_length=max_length, truncation=True
        ).input_ids
        for prompt in prompts:
            # verbose=False: the tokenizer's own "indexing errors" warning
            # is replaced by the one below
            # with the start and end tokens
            n_tokens = len(self.tokenizer(prompt, verbose=False).input_ids)
            if n_tokens > max_length:
                warnings.warn(
                    f"prompt has {n_tokens} tokens, more than the text encoder's {max_length} (start and end "
                    f"tokens included); everything after token {max_length - 1} is ignored: {prompt!r}",
                    stacklevel=3,
                )
        ids = torch.tensor(ids, device=self.device)  # (B, T)
        # No attention mask: SD 1.5 was trained with the padding tokens attended.
        return self.text_encoder(ids).last_hidden_state  # (B, T, D)

    # -- pixels <-> latents ---------------------------------------------------------------

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, 4, H/8, W/8) latents (the mean
        of the VAE's posterior),
        scaled by the VAE's scaling factor to about unit variance: the x_0 that
        sampling ends at."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(
                f"expected pixels of shape (B, 3, H, W), got {tuple(pixels.shape)}"
            )
        posterior = self.vae.encode(
            (pixels * 2 - 1).to(self.device, self.dtype)
        ).latent_dist
        return posterior.mean.float() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 4, h, w) latents -> (B, 3, 8h, 8w) pixels in [0, 1], float32 on the
        CPU."""
        # back to the VAE's own latent scale
        z = latents / self.vae.config.scaling_factor
        pixels = self.vae.decode(z.to(self.device, self.dtype)).sample
        if not torch.isfinite(pixels).all() and self.dtype != torch.float32:
            warnings.warn(
                f"the VAE gave NaN/inf in {self.dtype}; decoding again in float32",
                stacklevel=2,
            )
            pixels = self.vae.float().decode(z.to(self.device, torch.float32)).sample
            self.vae.to(self.dtype)
        return (pixels.float() / 2 + 0.5).clamp(0, 1).cpu()

    # -- the loop -------------------------------------------------------------------------

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
        """Sample num_images images per prompt; every argument is checked before
        any work is done.

        img2img: with an init_image (a PIL image, or (1 or len(prompts), 3, H,
        W) pixels in [0, 1]) the ODE starts from x = z_0 + sigma_k n instead of
        sigma_0 n, where z_0 is the image's latents and sigma_k is the
        schedule's step k = steps - int(steps * strength) (diffusers' rule: the
        last int(steps * strength) of the `steps` steps are run). strength
        (default 0.8) is in (0, 1]: 1 starts from sigma_0 with the image's
        latents added, small values keep most of the image.

        Seeds and batches: the starting noise of all B = len(prompts) *
        num_images images is one draw of shape (B, C, h, w) from
        torch.Generator("cpu").manual_seed(seed), prompt-major (prompt 0's
        images first), as diffusers draws it. So the same call gives the same
        images on every device, and image k starts from slice k: images at
        different positions differ even for one prompt. torch fills normal noise
        in blocks of 16 numbers, so when 16 divides C*h*w (SD 1.5: when h*w =
        H*W/64 is a multiple of 4) slice k is the same in any batch of more than
        k images, and a deterministic sampler gives image k again up to float
        rounding (the UNet's batch differs); otherwise every image depends on
        the batch size. euler_ancestral draws its per-step noise for the whole
        batch too, so its images always depend on the batch.
        """
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if (
            not isinstance(prompts, (list, tuple))
            or not prompts
            or not all(isinstance(p, str) for p in prompts)
        ):
            raise TypeError(
                f"prompt must be a string or a non-empty list of strings, got {prompt!r}"
            )
        negatives = self._negative_prompts(negative_prompt, len(prompts))
        init_pixels = (
            None
            if init_image is None
            else self._init_pixels(init_image, len(prompts), height, width)
        )
        if init_pixels is not None:
            height, width = init_pixels.shape[-2:]
        height = self.default_size if height is None else height
        width = self.default_size if width is None else width
        self._check_arguments(
            height, width, steps, guidance, seed, num_images, spacing, sampler
        )
        if init_pixels is not None:
            strength = 0.8 if strength is None else strength
            check_strength(strength, steps)
        elif strength is not None:
            raise ValueError(
                f"strength={strength!r} needs an init_image: it says how much of the image to keep"
            )

        # 1. The schedule: N + 1 noise levels from sigma_0 down to 0 (it also
        # refuses a step count its spacing cannot give). img2img runs only its
        # last int(N * strength) steps, from sigma_k.
        # (N + 1,) float64
        sigmas = get_sigmas(self.denoiser.sigma_table, steps, spacing)
        if init_pixels is not None:
            sigmas = sigmas[steps - int(steps * strength) :]  # (int(N * strength) + 1,)

        # 2. Text: each prompt's embedding, repeated for its images; the
        # negative ones for guidance.
        # (B, T, D)
        cond = self.encode_prompts(prompts).repeat_interleave(num_images, dim=0)
        uncond = None
        if guidance == 1.0 and negative_prompt is not None:
            warnings.warn(
                "the negative prompt has no effect at guidance 1.0 (no unconditional pass)",
                stacklevel=2,
            )
        if guidance != 1.0:
            # (B, T, D)
            uncond = self.encode_prompts(negatives).repeat_interleave(num_images, dim=0)
        denoiser = CFGDenoiser(self.denoiser, cond, uncond, float(guidance))

        # 3. The starting point x_0 = sigma_0 * n, n ~ N(0, I) from a seeded
        # CPU generator.
        channels = self.unet.config.in_channels
        shape = (
            len(cond),
            channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        generator = torch.Generator("cpu").manual_seed(int(seed))
        noise = torch.randn(shape, generator=generator)  # (B, C, h, w)
        x = noise.to(self.device) * sigmas[0].item()
        # img2img: x = z_0 + sigma_k n, the image's latents at noise level
        # sigma_k
        if init_pixels is not None:
            z0 = self.encode(init_pixels)  # (1 or len(prompts), C, h, w)
            x = x + z0.repeat_interleave(len(cond) // len(z0), dim=0)

        # 4. Solve the ODE from sigma_0 down to 0.
        recorded = []

        def record(step: dict) -> None:
            recorded.append(
                {
                    k: v.float().cpu() if torch.is_tensor(v) else v
                    for k, v in step.items()
                }
            )

        callback = record if return_steps else None
        if sampler == "euler":
            latents = sample_euler(
                denoiser, x, sigmas, callback=callback, progress=progress
            )
        elif sampler == "heun":
            latents = sample_heun(
                denoiser, x, sigmas, callback=callback, progress=progress
            )
        elif sampler == "dpmpp_2m":
            latents = sample_dpmpp_2m(
                denoiser, x, sigmas, callback=callback, progress=progress
            )
        # its fresh noise at every step continues the seeded stream
        elif sampler == "euler_ancestral":
            latents = sample_euler_ancestral(
                denoiser,
                x,
                sigmas,
                generator=generator,
                callback=callback,
                progress=progress,
            )
        if not torch.isfinite(latents).all():
            raise FloatingPointError(
                f"sampling produced NaN/inf latents ({self.name}, {self.dtype} on {self.device}); "
                "if this is fp16, try dtype=torch.float32"
            )

        # 5. Latents -> pixels.
        pixels = self.decode(latents)
        return Generation(to_pil(pixels), pixels, latents.cpu(), sigmas, recorded)

    __call__ = generate

    @staticmethod
    def _negative_prompts(
        negative_prompt: str | list[str] | None, n_prompts: int
    ) -> list[str]:
        if negative_prompt is None:
            # the unconditional embedding is that of the empty prompt
            return [""] * n_prompts
        if isinstance(negative_prompt, str):
            return [negative_prompt] * n_prompts
        if not isinstance(negative_prompt, (list, tuple)) or not all(
            isinstance(p, str) for p in negative_prompt
        ):
            raise TypeError(
                f"negative_prompt must be None, a string or a list of strings, got {type(negative_prompt).__name__}: "
                f"{negative_prompt!r}"
            )
        if len(negative_prompt) != n_prompts:
            raise ValueError(
                f"got {len(negative_prompt)} negative prompts for {n_prompts} prompts; give one per prompt"
            )
        return list(negative_prompt)

    def _init_pixels(
        self,
        init_image: Image.Image | torch.Tensor,
        n_prompts: int,
        height: int | None,
        width: int | None,
    ) -> torch.Tensor:
        """img2img's image as (1 or n_prompts, 3, H, W) float32 pixels in [0, 1],
        checked."""
        if isinstance(init_image, Image.Image):
            # (H, W, 3)
            array = np.asarray(init_image.convert("RGB"), dtype=np.float32) / 255
            pixels = torch.from_numpy(array).permute(2, 0, 1)[None]  # (1, 3, H, W)
        elif isinstance(init_image, torch.Tensor):
            pixels = init_image.detach().float().cpu()
        else:
            raise TypeError(
                f"init_image must be a PIL image or a (B, 3, H, W) tensor of pixels in [0, 1], "
                f"got {type(init_image).__name__}"
            )
        if (
            pixels.ndim != 4
            or pixels.shape[1] != 3
            or pixels.shape[0] not in (1, n_prompts)
        ):
            raise ValueError(
                f"init_image must have shape (1 or {n_prompts}, 3, H, W) (one image, or one per prompt), "
                f"got {tuple(pixels.shape)}"
            )
        if not torch.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
            raise ValueError(
                f"init_image's pixels must be finite and in [0, 1], got values in "
                f"[{pixels.min().item():.3g}, {pixels.max().item():.3g}]"
            )
        image_height, image_width = pixels.shape[-2:]
        if (height is not None and height != image_height) or (
            width is not None and width != image_width
        ):
            raise ValueError(
                f"init_image is {image_width} x {image_height} pixels but height={height}, width={width} were "
                "asked; leave height and width out (they default to the image's) or resize the image"
            )
        return pixels

    def _check_arguments(
        self,
        height: int,
        width: int,
        steps: int,
        guidance: float,
        seed: int,
        num_images: int,
        spacing: str,
        sampler: str,
    ) -> None:
        """Refuse, with what was wrong and what is allowed, any argument `generate`
        cannot use."""
        factor = self.vae_scale_factor
        for name, size in (("height", height), ("width", width)):
            if not is_integer(size):
                raise TypeError(
                    f"{name} must be an integer number of pixels, got {type(size).__name__}: {size!r}"
                )
            if size <= 0 or size % factor:
                lower = max(factor, size // factor * factor)
                raise ValueError(
                    f"{name} must be a positive multiple of {factor} (the VAE's downsampling factor), "
                    f"got {size!r}; try {lower} or {lower + factor}"
                )
        check_num_steps(steps)
        if not isinstance(guidance, numbers.Real) or isinstance(guidance, bool):
            raise TypeError(
                f"guidance must be a number (e.g. 7.5), got {type(guidance).__name__}: {guidance!r}"
            )
        if not math.isfinite(guidance):
            raise ValueError(
                f"guidance must be a finite number (e.g. 7.5; 1 turns guidance off), got {guidance!r}"
            )
        if not is_integer(seed) or not 0 <= seed < 2**64:
            raise ValueError(
                f"seed must be an integer in [0, 2**64), the range of torch's generator, got {seed!r}"
            )
        if not is_integer(num_images) or num_images < 1:
            raise ValueError(
                f"num_images must be a positive integer, got {num_images!r}"
            )
        if spacing not in SPACINGS:
            raise ValueError(
                f"unknown spacing {spacing!r}; expected one of {', '.join(SPACINGS)}"
            )
        if sampler not in SAMPLERS:
            raise ValueError(
                f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}"
            )


def check_strength(strength: float, steps: int) -> None:
    """img2img's strength must be in (0, 1] and leave at least one of the `steps` steps
    to run."""
    if not isinstance(strength, numbers.Real) or isinstance(strength, bool):
        raise TypeError(
            f"strength must be a number in (0, 1], got {type(strength).__name__}: {strength!r}"
        )
    if not 0 < strength <= 1:
        raise ValueError(
            f"strength must be in (0, 1] (1: start from pure noise plus the image), got {strength!r}"
        )
    if int(steps * strength) < 1:
        raise ValueError(
            f"strength {strength} of {steps} steps runs int({steps} * {strength}) = 0 steps; "
            f"use at least {math.ceil(1 / strength)} steps or a larger strength"
        )


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) floats in [0, 1] -> PIL images, rounded to 8 bits."""
    # (B, H, W, 3)
    arrays = (pixels.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    return [Image.fromarray(a) for a in arrays]
