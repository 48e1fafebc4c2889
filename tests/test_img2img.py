"""img2img: the ODE started at sigma_k from the image's latents, against diffusers'
StableDiffusionImg2ImgPipeline."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch.testing import assert_close

from minsd.loading import DEFAULT_MODEL, load_pipeline

PROMPT = "a blue square on a black background"


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(DEFAULT_MODEL, device="cpu")


@pytest.fixture(scope="module")
def reference():
    from diffusers import EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline

    reference = StableDiffusionImg2ImgPipeline.from_pretrained(
        DEFAULT_MODEL, safety_checker=None, requires_safety_checker=False
    )
    reference.scheduler = EulerDiscreteScheduler.from_config(
        reference.scheduler.config, timestep_spacing="linspace"
    )
    reference.set_progress_bar_config(disable=True)
    return reference


def red_circle(size: int = 32) -> Image.Image:
    """A red circle on black, drawn like a hand would: a little off-centre and not quite
    round."""
    image = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(image).ellipse((7, 5, 26, 27), fill=(220, 30, 20))
    return image


@pytest.mark.parametrize(("strength", "steps"), [(0.6, 10), (1.0, 8), (0.35, 20)])
def test_same_images_as_diffusers_img2img(pipe, reference, strength, steps):
    """For the same image latents, strength, seed and steps, minsd gives diffusers'
    img2img pixels.

    diffusers is handed the latents z_0 that minsd encodes (a 4-channel `image`
    skips its VAE encoder): diffusers samples z_0 from the VAE's posterior with the
    generator, minsd takes the posterior's mean, a deliberate difference that would
    otherwise also shift the noise drawn after it.
    """
    image = red_circle()
    z0 = pipe.encode(torch.from_numpy(pipe_pixels(image)))  # (1, 4, 8, 8)
    ours = pipe(
        PROMPT, init_image=image, strength=strength, steps=steps, seed=5, progress=False
    )
    expected = reference(
        PROMPT,
        image=z0,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=7.5,
        output_type="pt",
        generator=torch.Generator("cpu").manual_seed(5),
    ).images
    assert_close(ours.pixels, expected, rtol=0, atol=1e-4)
    # The start-step rule: the run visits diffusers' last int(steps * strength) sigmas.
    reference.scheduler.set_timesteps(steps)
    start = steps - int(steps * strength)
    # diffusers: float32
    assert_close(
        ours.sigmas.float(), reference.scheduler.sigmas[start:], rtol=2e-5, atol=1e-7
    )


def pipe_pixels(image: Image.Image) -> np.ndarray:
    """(1, 3, H, W) float32 in [0, 1]."""
    return (np.asarray(image, dtype=np.float32) / 255).transpose(2, 0, 1)[None].copy()


def test_small_strength_keeps_the_image_and_large_follows_the_prompt(pipe):
    """Without guidance, at strength 0.2 the red circle stays red; at 0.7 the prompt's
    blue has taken over (measured on the mean colour of the picture's middle; the two
    checks fail if strength does nothing)."""

    def middle_colour(strength: float) -> torch.Tensor:
        result = pipe(
            PROMPT,
            init_image=red_circle(),
            strength=strength,
            steps=20,
            guidance=1.0,
            progress=False,
        )
        return result.pixels[0, :, 10:22, 10:22].mean(dim=(1, 2))  # (3,) RGB

    kept, replaced = middle_colour(0.2), middle_colour(0.7)
    assert kept[0] > 2 * kept[2], kept  # red
    assert replaced[2] > 2 * replaced[0], replaced  # blue


def test_init_image_tensor_is_the_pil_image(pipe):
    """A (1, 3, H, W) tensor in [0, 1] and the PIL image it came from give the same
    result."""
    image = red_circle()
    from_pil = pipe(
        PROMPT, init_image=image, strength=0.5, steps=4, seed=1, progress=False
    )
    from_tensor = pipe(
        PROMPT,
        init_image=torch.from_numpy(pipe_pixels(image)),
        strength=0.5,
        steps=4,
        seed=1,
        progress=False,
    )
    assert torch.equal(from_pil.pixels, from_tensor.pixels)
