"""The original SD (CompVis `ldm`) key layout of a checkpoint, written from a diffusers
pipeline: the renaming, key by key, that diffusers'
scripts/convert_diffusers_to_original_stable_diffusion.py does, generalised from SD 1.5's
4 levels and 2 layers to any. test_single_file.py checks it; conftest.py's
`tiny_checkpoint` writes the tiny pipeline with it.
"""

import torch

RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
}
RESNET |= {
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def unet_prefixes(levels: int, layers: int) -> dict[str, str]:
    """diffusers' UNet module prefixes -> openaimodel.UNetModel's. input_blocks:
    conv_in, then per level `layers` x (ResBlock, SpatialTransformer) and a
    Downsample; output_blocks: per level `layers + 1` x
    (ResBlock, SpatialTransformer), the last with the Upsample."""
    prefixes = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "mid_block.resnets.0.": "middle_block.0.",
        "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
    }
    for i in range(levels):
        for j in range(layers):
            prefixes[f"down_blocks.{i}.resnets.{j}."] = (
                f"input_blocks.{(layers + 1) * i + j + 1}.0."
            )
            prefixes[f"down_blocks.{i}.attentions.{j}."] = (
                f"input_blocks.{(layers + 1) * i + j + 1}.1."
            )
        prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = (
            f"input_blocks.{(layers + 1) * (i + 1)}.0.op."
        )
        for j in range(layers + 1):
            prefixes[f"up_blocks.{i}.resnets.{j}."] = (
                f"output_blocks.{(layers + 1) * i + j}.0."
            )
            prefixes[f"up_blocks.{i}.attentions.{j}."] = (
                f"output_blocks.{(layers + 1) * i + j}.1."
            )
        # after the attention, if any
        upsample = f"output_blocks.{(layers + 1) * i + layers}.{1 if i == 0 else 2}."
        prefixes[f"up_blocks.{i}.upsamplers.0."] = upsample
    return prefixes


def vae_prefixes(levels: int, layers: int) -> dict[str, str]:
    """diffusers' AutoencoderKL module prefixes -> ldm's Encoder/Decoder (whose up
    blocks count from the bottom)."""
    prefixes = {
        "encoder.conv_norm_out.": "encoder.norm_out.",
        "decoder.conv_norm_out.": "decoder.norm_out.",
    }
    for part in ("encoder", "decoder"):
        prefixes[f"{part}.mid_block.resnets.0."] = f"{part}.mid.block_1."
        prefixes[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
        prefixes[f"{part}.mid_block.resnets.1."] = f"{part}.mid.block_2."
    for i in range(levels):
        for j in range(layers):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}."] = (
                f"encoder.down.{i}.block.{j}."
            )
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = (
            f"encoder.down.{i}.downsample."
        )
        for j in range(layers + 1):
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}."] = (
                f"decoder.up.{levels - 1 - i}.block.{j}."
            )
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = (
            f"decoder.up.{levels - 1 - i}.upsample."
        )
    return prefixes


def renamed(key: str, prefixes: dict[str, str]) -> str:
    """key with its longest matching prefix replaced; keys of top-level modules keep
    their names."""
    matches = [p for p in prefixes if key.startswith(p)]
    if not matches:
        return key
    prefix = max(matches, key=len)
    return prefixes[prefix] + key[len(prefix) :]


def ldm_checkpoint(pipe, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A diffusers StableDiffusionPipeline's UNet, VAE and text encoder as one state
    dict in the original layout."""
    unet_config, vae_config = pipe.unet.config, pipe.vae.config
    checkpoint = {}
    unet = unet_prefixes(
        len(unet_config.block_out_channels), unet_config.layers_per_block
    )
    for key, value in pipe.unet.state_dict().items():
        # openaimodel's ResBlock names its layers by position in Sequentials
        if ".resnets." in key:
            module, param = key.rsplit(".", 2)[1:]
            key = key[: -len(f"{module}.{param}")] + f"{RESNET[module]}.{param}"
        checkpoint["model.diffusion_model." + renamed(key, unet)] = value
    vae = vae_prefixes(len(vae_config.block_out_channels), vae_config.layers_per_block)
    for key, value in pipe.vae.state_dict().items():
        key = renamed(key, vae).replace("conv_shortcut", "nin_shortcut")
        if ".attn_1." in key:
            block, leaf = key.split(".attn_1.")
            module, param = leaf.rsplit(".", 1)
            key = f"{block}.attn_1.{VAE_ATTENTION[module]}.{param}"
            # ldm's attention uses 1x1 convolutions
            value = value[:, :, None, None] if value.ndim == 2 else value
        checkpoint["first_stage_model." + key] = value
    # ldm wraps transformers' CLIPTextModel, whose keys began with "text_model."
    # until transformers 5.6 flattened it
    for key, value in pipe.text_encoder.state_dict().items():
        checkpoint[
            "cond_stage_model.transformer.text_model." + key.removeprefix("text_model.")
        ] = value
    return {k: v.to(dtype).contiguous() for k, v in checkpoint.items()}
