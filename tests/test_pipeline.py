"""minsd's text-to-image pipeline against diffusers' StableDiffusionPipeline on the same
tiny components."""

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import minsd.scheduler
from minsd import SAMPLERS, load_pipeline
from minsd.pipeline import CFGDenoiser
from minsd.preview import latents_to_rgb

SIZE = dict(height=64, width=64)


@pytest.fixture(scope="module")
def pipe(tiny_folder):
    return load_pipeline(tiny_folder, device="cpu")


def reference_images(
    reference,
    prompt,
    negative=None,
    steps=6,
    guidance=7.5,
    seed=0,
    num_images=1,
    spacing="linspace",
    size=SIZE,
):
    """diffusers' images, (B, 3, H, W) in [0, 1], for minsd's arguments."""
    # pinned: the SD 1.5 repo's config says nothing
    reference.scheduler.register_to_config(timestep_spacing=spacing)
    out = reference(
        prompt,
        negative_prompt=negative,
        num_inference_steps=steps,
        guidance_scale=guidance,
        output_type="np",
        generator=torch.Generator("cpu").manual_seed(seed),
        num_images_per_prompt=num_images,
        **size,
    )
    return torch.from_numpy(out.images).permute(0, 3, 1, 2)  # (B, 3, H, W) in [0, 1]


@pytest.mark.parametrize(
    ("prompt", "negative", "num_images", "steps", "spacing"),
    [
        ("a red circle", None, 1, 6, "linspace"),
        ("a red circle", "blue", 1, 6, "linspace"),
        # batch 4: 2 prompts x 2 images
        (["a red circle", "a blue cat"], ["blue", "red"], 2, 4, "linspace"),
        ("a blue cat", None, 2, 5, "trailing"),
    ],
)
def test_same_images_as_diffusers(
    pipe, tiny_reference, prompt, negative, num_images, steps, spacing
):
    """The same prompts, seed and spacing give diffusers' StableDiffusionPipeline's
    images, to float rounding."""
    expected = reference_images(
        tiny_reference, prompt, negative, steps, num_images=num_images, spacing=spacing
    )
    result = pipe(
        prompt,
        negative,
        steps=steps,
        num_images=num_images,
        spacing=spacing,
        progress=False,
        **SIZE,
    )
    assert result.pixels.shape == expected.shape
    assert_close(result.pixels, expected, rtol=0, atol=2e-5)
    # The comparison can fail: another seed gives a visibly different image.
    other = pipe(
        prompt,
        negative,
        steps=steps,
        num_images=num_images,
        spacing=spacing,
        seed=1,
        progress=False,
        **SIZE,
    )
    assert (other.pixels - expected).abs().max() > 1e-2


def test_guidance_one_is_the_conditional_model(pipe, tiny_reference):
    """At guidance 1 (no classifier-free guidance in diffusers) the images are still
    diffusers'."""
    expected = reference_images(tiny_reference, "a red circle", guidance=1.0, steps=4)
    result = pipe("a red circle", guidance=1.0, steps=4, progress=False, **SIZE)
    assert_close(result.pixels, expected, rtol=0, atol=2e-5)


def test_same_seed_same_image_and_pil_output(pipe):
    """The same seed gives the same pixels, and the PIL image is those pixels rounded to
    8 bits."""
    first = pipe("a red circle", steps=3, seed=7, progress=False, **SIZE)
    second = pipe("a red circle", steps=3, seed=7, progress=False, **SIZE)
    assert torch.equal(first.pixels, second.pixels)
    image = first.images[0]
    assert image.size == (64, 64) and image.mode == "RGB"
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1) / 255  # (3, H, W)
    # rounded to 8 bits
    assert_close(pixels, first.pixels[0], rtol=0, atol=0.5 / 255 + 1e-6)


def test_default_size_is_diffusers_default(pipe, tiny_reference):
    """Without height and width, minsd draws the image diffusers' pipeline draws by
    default (64 x 64 here)."""
    expected = reference_images(tiny_reference, "a red circle", steps=2, size={})
    result = pipe("a red circle", steps=2, progress=False)
    # the UNet's sample_size 8 times the VAE's 8
    assert result.pixels.shape == expected.shape == (1, 3, 64, 64)
    assert_close(result.pixels, expected, rtol=0, atol=2e-5)


def test_steps_are_returned_for_plotting(pipe):
    """return_steps keeps every step's x and denoised latent at its sigma, for plots and
    previews."""
    result = pipe("a red circle", steps=5, return_steps=True, progress=False, **SIZE)
    assert [s["i"] for s in result.steps] == list(range(5))
    assert all(
        s["x"].shape == s["denoised"].shape == (1, 4, 8, 8) for s in result.steps
    )
    assert_close(
        torch.stack([s["sigma"] for s in result.steps]), result.sigmas[:-1].float()
    )
    assert result.steps[0]["x"].std() > 5  # x_0 is noise at sigma_max = 14.6
    preview = latents_to_rgb(result.steps[-1]["denoised"])
    assert preview.shape == (1, 3, 8, 8) and 0 <= preview.min() and preview.max() <= 1


def test_negative_prompt_without_guidance_warns(pipe):
    """A negative prompt at guidance 1 has no effect, and a warning says so."""
    with pytest.warns(
        UserWarning, match="the negative prompt has no effect at guidance 1.0"
    ):
        pipe("a red circle", "blue", guidance=1.0, steps=1, progress=False, **SIZE)


def test_long_prompt_warns(pipe):
    """A prompt longer than the text encoder's 77 tokens gets a warning that says so."""
    with pytest.warns(
        UserWarning, match=r"prompt has \d+ tokens, more than the text encoder's 77"
    ):
        pipe("red " * 100, steps=1, progress=False, **SIZE)


def test_nan_is_reported_not_returned(pipe):
    """A model that produces NaN raises, instead of returning a black image."""
    unet = pipe.unet
    original = unet.conv_out.bias.clone()
    try:
        with torch.no_grad():
            unet.conv_out.bias.fill_(float("nan"))
        with pytest.raises(
            FloatingPointError, match="sampling produced NaN/inf latents"
        ):
            pipe("a red circle", steps=2, progress=False, **SIZE)
    finally:
        with torch.no_grad():
            unet.conv_out.bias.copy_(original)


def test_nan_pixels_are_reported_not_returned(pipe):
    """A VAE that decodes NaN raises (no retry in another dtype); the pipeline's VAE
    is left as it was."""
    vae, bias = pipe.vae, pipe.vae.decoder.conv_out.bias
    original, dtype = bias.clone(), vae.dtype
    try:
        with torch.no_grad():
            bias.fill_(float("nan"))
        with pytest.raises(FloatingPointError, match="the VAE decoded NaN/inf pixels"):
            pipe("a red circle", steps=2, progress=False, **SIZE)
        assert pipe.vae is vae and vae.dtype == dtype
    finally:
        with torch.no_grad():
            bias.copy_(original)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_name_runs_its_function(pipe, sampler):
    """generate(sampler=name) runs scheduler.py's sample_<name>: the same latents as
    the function called by hand on the same start, schedule and denoiser."""
    kwargs = dict(guidance=1.0, steps=3, seed=2, progress=False, **SIZE)
    result = pipe("a red circle", sampler=sampler, **kwargs)
    denoiser = CFGDenoiser(
        pipe.denoiser, pipe.encode_prompts(["a red circle"]), None, 1.0
    )
    generator = torch.Generator("cpu").manual_seed(2)
    x = torch.randn(result.latents.shape, generator=generator) * result.sigmas[0].item()
    sample = getattr(minsd.scheduler, f"sample_{sampler}")
    extra = {"generator": generator} if sampler == "euler_ancestral" else {}
    expected = sample(denoiser, x, result.sigmas, None, False, **extra)
    torch.testing.assert_close(result.latents, expected, rtol=0, atol=0)


def test_euler_ancestral_matches_diffusers(pipe, tiny_reference):
    """The per-step noise continues the seeded CPU stream, in the order diffusers draws
    it."""
    from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

    euler = tiny_reference.scheduler
    tiny_reference.scheduler = EulerAncestralDiscreteScheduler.from_config(
        euler.config, timestep_spacing="linspace"
    )
    try:
        out = tiny_reference(
            "a red circle",
            num_inference_steps=6,
            guidance_scale=7.5,
            output_type="np",
            generator=torch.Generator("cpu").manual_seed(0),
            **SIZE,
        )
    finally:
        tiny_reference.scheduler = EulerDiscreteScheduler.from_config(euler.config)
    expected = torch.from_numpy(out.images).permute(0, 3, 1, 2)
    result = pipe(
        "a red circle", steps=6, sampler="euler_ancestral", progress=False, **SIZE
    )
    assert_close(result.pixels, expected, rtol=0, atol=1e-4)
    deterministic = pipe("a red circle", steps=6, progress=False, **SIZE)
    # the fresh noise matters
    assert (deterministic.pixels - expected).abs().max() > 1e-2


def test_seed_and_batch_rule(pipe):
    """README's "Seeds and batches": image k starts from slice k of one (B, C, h, w)
    draw, so two images of one prompt differ; slice 0 is the same alone and in a batch
    when 16 divides C*h*w, and not otherwise."""
    prompts = ["a red circle", "a blue square"]

    def start(prompt: str | list[str], size: int, num_images: int = 1) -> torch.Tensor:
        result = pipe(
            prompt,
            steps=1,
            seed=3,
            height=size,
            width=size,
            num_images=num_images,
            return_steps=True,
            progress=False,
        )
        return result.steps[0]["x"]  # (B, C, h, w): x_0 = sigma_0 n

    pair = start("a red circle", 32, num_images=2)  # tiny-a's VAE: factor 8, C = 4
    assert not torch.allclose(pair[0], pair[1])
    # 32 px: h = w = 4, C*h*w = 64, a multiple of 16
    assert torch.equal(start(prompts[0], 32)[0], start(prompts, 32)[0])
    # 24 px: h = w = 3, C*h*w = 36, not a multiple of 16: torch's normal sampler
    # fills the batch differently
    assert not torch.equal(start(prompts[0], 24)[0], start(prompts, 24)[0])
