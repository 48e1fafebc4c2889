"""Single-file checkpoints: SD 1.x weights in one .safetensors file, in the original key
layout.

The layout is CompVis/stable-diffusion's (the `ldm` package): the UNet is `UNetModel` of
ldm/modules/diffusionmodules/openaimodel.py under "model.diffusion_model.", the VAE is
the `Encoder`/`Decoder` of ldm/modules/diffusionmodules/model.py under
"first_stage_model.", and the text encoder is `FrozenCLIPEmbedder` of
ldm/modules/encoders/modules.py, a transformers CLIPTextModel, under
"cond_stage_model.transformer.". `ldm_checkpoint` (tests/ldm_layout.py) writes the tiny
diffusers pipeline in that layout, renaming key by key as diffusers'
scripts/convert_diffusers_to_original_stable_diffusion.py does (generalised from SD
1.5's 4 levels and 2 layers to any); diffusers' single-file loader
(diffusers/loaders/single_file_utils.py, convert_ldm_*_checkpoint) reads that layout
back, and minsd must then give exactly the images of the diffusers folder the file was
made from.
"""

import pytest
import torch
from conftest import TINY_UNET_CONFIGS
from ldm_layout import ldm_checkpoint, renamed, unet_prefixes
from safetensors.torch import load_file, save_file

from minsd.configs import SD15_CONFIG, read_configs
from minsd.loading import load_pipeline
from minsd.unet import UNet, UNetConfig


def test_the_file_is_in_the_original_layout(tiny_checkpoint):
    """diffusers recognises the written file as an SD v1 checkpoint, by keys CompVis'
    code names."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    checkpoint = load_file(tiny_checkpoint)
    assert infer_diffusers_model_type(checkpoint) == "v1"
    keys = checkpoint.keys()
    assert (
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
        in keys
    )
    # the first Upsample, no attention before
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in keys
    # Upsample after a SpatialTransformer
    assert "model.diffusion_model.output_blocks.5.2.conv.weight" in keys
    assert "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight" in keys
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in keys
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in keys


def test_single_file_gives_the_folders_images(tiny_checkpoint, tiny_folder):
    """load_pipeline(file, config=folder) gives the same weights and the same images as
    the folder."""
    from_file = load_pipeline(tiny_checkpoint, device="cpu", config=tiny_folder)
    from_folder = load_pipeline(tiny_folder, device="cpu")
    for part in ("unet", "vae", "text_encoder"):
        ours, reference = (
            getattr(from_file, part).state_dict(),
            getattr(from_folder, part).state_dict(),
        )
        assert ours.keys() == reference.keys()
        assert all(torch.equal(ours[k], reference[k]) for k in reference), part
    kwargs = dict(height=32, width=32, steps=3, seed=1, progress=False)
    assert torch.equal(
        from_file("a red circle", **kwargs).pixels,
        from_folder("a red circle", **kwargs).pixels,
    )
    assert from_file.name == str(tiny_checkpoint)


def test_an_fp16_file_loads_in_fp32(tiny_reference, tiny_folder, tmp_path):
    """Many checkpoints are stored in fp16; on a CPU they run in fp32, with the file's
    values."""
    path = tmp_path / "tiny-fp16.safetensors"
    save_file(ldm_checkpoint(tiny_reference, torch.float16), path)
    pipe = load_pipeline(path, device="cpu", config=tiny_folder)
    weight = pipe.unet.conv_in.weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, tiny_reference.unet.conv_in.weight.half().float())


def test_the_sd15_configs_are_sd15():
    """minsd/sd15_config builds SD 1.5: minsd's UNetConfig defaults, FACTS'
    parameter counts, its schedule
    and its tokenizer (77 tokens; the known ids of a prompt)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    from minsd.denoiser import scaled_linear_alphas_cumprod

    configs = read_configs(SD15_CONFIG)
    assert configs["unet"] == UNetConfig()
    with torch.device("meta"):
        unet = UNet(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])
        text_encoder = CLIPTextModel(configs["text_encoder"])
    counts = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, text_encoder)]
    assert counts == [859_520_964, 83_653_863, 123_060_480]
    assert (
        vae.config.scaling_factor == 0.18215
        and 2 ** (len(vae.config.block_out_channels) - 1) == 8
    )
    assert torch.equal(configs["alphas_cumprod"], scaled_linear_alphas_cumprod())
    tokenizer = configs["tokenizer"]
    assert tokenizer.model_max_length == 77 and len(tokenizer) == 49408
    ids = tokenizer("a photograph of an astronaut riding a horse").input_ids
    assert ids == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]


def test_without_config_the_file_is_read_as_sd15(tiny_checkpoint):
    """With no config, a single file is SD 1.5: the tiny file does not fit it, and the
    error says where."""
    with pytest.raises(ValueError, match="does not fit the UNet of its config") as info:
        load_pipeline(tiny_checkpoint, device="cpu")
    assert "converted from the original SD layout" in str(info.value)
    assert (
        "size mismatch for conv_in.weight: copying a param with shape "
        "torch.Size([32, 4, 3, 3]) from checkpoint, the shape in current model is "
        "torch.Size([320, 4, 3, 3])"
    ) in str(info.value)


@pytest.mark.parametrize("name", ["tiny-a", "tiny-b"])
def test_unet_prefixes_cover_every_key(name):
    """The renaming is total: every key of a diffusers UNet gets an ldm name, and no two
    the same."""
    from conftest import diffusers_unet

    unet = diffusers_unet(TINY_UNET_CONFIGS[name])
    prefixes = unet_prefixes(
        len(unet.config.block_out_channels), unet.config.layers_per_block
    )
    keys = [renamed(k, prefixes) for k in unet.state_dict()]
    assert len(set(keys)) == len(keys)
    assert all(
        k.startswith(
            ("time_embed.", "input_blocks.", "middle_block.", "output_blocks.", "out.")
        )
        for k in keys
    )
