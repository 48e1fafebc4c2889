"""Loading diffusers-format folders: the same images as the reference, and clear errors
for bad input."""

import json
import shutil

import pytest
import torch
from conftest import TINY_UNET_CONFIGS, diffusers_unet, randomize
from safetensors.torch import save_file
from torch.testing import assert_close

from minsd import load_pipeline
from minsd.choices import WEIGHTS_ENV
from minsd.configs import read_configs, unet_config_from_diffusers
from minsd.loading import load_unet
from minsd.unet import UNet


def copy_folder(src, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def test_loaded_unet_is_the_saved_one(tiny_folder, tiny_reference):
    """load_unet reads back the saved diffusers UNet: the same outputs."""
    unet = load_unet(tiny_folder / "unet")
    x, t, context = (
        torch.randn(2, 4, 8, 8),
        torch.tensor([10.0, 900.0]),
        torch.randn(2, 77, 32),
    )
    with torch.no_grad():
        assert_close(
            unet(x, t, context),
            tiny_reference.unet(x, t, context).sample,
            rtol=1e-5,
            atol=1e-5,
        )


def test_a_unet_built_in_python_reads_as_its_config_json():
    """The .config of a diffusers UNet built in Python (tuples, no _class_name) gives
    the UNetConfig its config.json gives; minsd's UNet built from it takes that model's
    weights strictly and computes its output."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    reference = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64, 64, 96),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=4,
        cross_attention_dim=24,
        norm_num_groups=8,
    ).eval()
    randomize(reference)
    assert isinstance(reference.config.block_out_channels, tuple)
    config = unet_config_from_diffusers(reference.config)
    assert config == unet_config_from_diffusers(json.loads(reference.to_json_string()))
    assert (config.block_out_channels, config.num_heads) == ((32, 64, 64, 96), 4)
    unet = UNet(config).eval()
    unet.load_state_dict(reference.state_dict(), strict=True)
    x, t, context = (
        torch.randn(2, 4, 8, 8),
        torch.tensor([3.0, 700.0]),
        torch.randn(2, 5, 24),
    )
    with torch.no_grad():
        assert_close(
            unet(x, t, context),
            reference(x, t, context).sample,
            rtol=1e-5,
            atol=1e-5,
        )


def test_weights_from_the_environment(tiny_folder, monkeypatch):
    """With no name given, load_pipeline loads the folder that MINSD_WEIGHTS names."""
    monkeypatch.setenv(WEIGHTS_ENV, str(tiny_folder))
    pipe = load_pipeline(device="cpu")
    assert pipe.name == str(tiny_folder) and pipe.dtype == torch.float32


def test_missing_folder_says_how_to_get_weights():
    """A path that is not there is refused with its name, where it was looked for, and
    how to get SD 1.5's weights (minsd downloads nothing)."""
    with pytest.raises(FileNotFoundError) as info:
        load_pipeline("/nonexistent/sd15")
    message = str(info.value)
    assert message.startswith("'/nonexistent/sd15': no such file or folder")
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in message
    assert f"{WEIGHTS_ENV}=sd15" in message


def test_file_instead_of_folder(tmp_path):
    """An empty .safetensors file is a damaged single-file checkpoint; any other file is
    refused."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"model\.safetensors is not a readable safetensors file"
    ):
        load_pipeline(path)
    notes = tmp_path / "notes.txt"
    notes.write_text("sd 1.5")
    with pytest.raises(
        ValueError,
        match=r"a diffusers-format folder or a \.safetensors checkpoint, but .*notes\.txt is",
    ):
        load_pipeline(notes)


@pytest.mark.parametrize(
    "missing", ["model_index.json", "vae", "scheduler/scheduler_config.json"]
)
def test_missing_parts_are_named(tiny_folder, tmp_path, missing):
    """A folder missing a part of the diffusers layout is refused, naming what is
    missing."""
    folder = copy_folder(tiny_folder, tmp_path)
    target = folder / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(
        FileNotFoundError,
        match=f"not a diffusers-format Stable Diffusion folder; missing: .*{missing}",
    ):
        read_configs(folder)


def test_pickled_weights_are_never_read(tiny_folder, tmp_path):
    """Only .bin (pickled) weights present: refused, never unpickled."""
    folder = copy_folder(tiny_folder, tmp_path)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").rename(
        folder / "unet" / "diffusion_pytorch_model.bin"
    )
    with pytest.raises(
        FileNotFoundError,
        match=r"diffusion_pytorch_model.bin exist, but minsd never unpickles",
    ):
        load_pipeline(folder)


def sd2_or_sdxl_unet(kind: str):
    """Tiny UNets with SD 2.x's and SDXL's distinguishing features."""
    from diffusers import UNet2DConditionModel

    cfg = TINY_UNET_CONFIGS["tiny-a"]
    if kind == "sd2":  # linear projections, per-level head dims, 1024-wide text
        return UNet2DConditionModel(
            sample_size=8,
            block_out_channels=cfg.block_out_channels,
            layers_per_block=2,
            norm_num_groups=8,
            attention_head_dim=(2, 4, 4, 4),
            cross_attention_dim=48,
            use_linear_projection=True,
        )
    # SDXL: 3 levels, extra time/text embeddings, deeper transformers
    return UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        norm_num_groups=8,
        down_block_types=(
            "DownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
        ),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4, 4),
        cross_attention_dim=64,
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2, 2),
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=64 + 6 * 8,
    )


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            "sd2",
            r"does not describe an SD 1.5-shaped UNet .*use_linear_projection=True .*attention_head_dim=\[2, 4, 4, 4\]",
        ),
        (
            "sdxl",
            r"does not describe an SD 1.5-shaped UNet .*down_block_types=.*addition_embed_type='text_time'",
        ),
    ],
)
def test_other_models_are_named(tiny_folder, tmp_path, kind, message):
    """An SD 2.x or SDXL UNet is refused, naming the config fields that are not SD
    1.5's."""
    folder = copy_folder(tiny_folder, tmp_path)
    shutil.rmtree(folder / "unet")
    sd2_or_sdxl_unet(kind).save_pretrained(folder / "unet", safe_serialization=True)
    with pytest.raises(ValueError, match=message):
        load_pipeline(folder)


def test_weights_that_do_not_fit_the_config_name_the_keys(tiny_folder, tmp_path):
    """An SD 2-style checkpoint (linear proj_in, 1024-wide text) behind an SD 1.5
    config.json."""
    folder = copy_folder(tiny_folder, tmp_path)
    state = diffusers_unet(TINY_UNET_CONFIGS["tiny-a"]).state_dict()
    key = "down_blocks.0.attentions.0.proj_in.weight"
    state[key] = state[key][:, :, 0, 0].contiguous()  # (C, C): a Linear, as in SD 2.x
    state["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"] = (
        torch.zeros(32, 48)
    )
    del state["conv_out.bias"]
    state["add_embedding.linear_1.weight"] = torch.zeros(4, 4)
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        folder / "unet" / "diffusion_pytorch_model.safetensors",
    )
    with pytest.raises(ValueError) as info:
        load_pipeline(folder)
    message = str(info.value)  # torch's load_state_dict error, with the file's path
    assert "unet/diffusion_pytorch_model.safetensors does not fit the UNet" in message
    assert (
        f"size mismatch for {key}: copying a param with shape torch.Size([32, 32]) "
        "from checkpoint, the shape in current model is torch.Size([32, 32, 1, 1])"
    ) in message
    assert (
        "attn2.to_k.weight: copying a param with shape torch.Size([32, 48])" in message
    )
    assert 'Missing key(s) in state_dict: "conv_out.bias"' in message
    assert 'Unexpected key(s) in state_dict: "add_embedding.linear_1.weight"' in message


def test_v_prediction_scheduler_is_refused(tiny_folder, tmp_path):
    """A v-prediction scheduler config is refused: minsd's denoiser is for
    eps-prediction."""
    folder = copy_folder(tiny_folder, tmp_path)
    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    config["prediction_type"] = "v_prediction"
    path.write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match="prediction_type='v_prediction' .*eps-prediction"
    ):
        load_pipeline(folder)


def test_fp16_variant_files_are_preferred_for_fp16(tiny_folder, tmp_path):
    """An fp16-variant UNet file is read when loading in fp16 (as on CUDA); the plain
    one otherwise."""
    folder = copy_folder(tiny_folder, tmp_path)
    unet_dir = folder / "unet"
    marker = load_unet(unet_dir).state_dict()
    marker["conv_out.bias"] = torch.full_like(marker["conv_out.bias"], 0.125)
    save_file(
        {k: v.half().contiguous() for k, v in marker.items()},
        unet_dir / "diffusion_pytorch_model.fp16.safetensors",
    )
    for sub, name in (("vae", "diffusion_pytorch_model"), ("text_encoder", "model")):
        shutil.copy(
            folder / sub / f"{name}.safetensors",
            folder / sub / f"{name}.fp16.safetensors",
        )
    half = load_pipeline(folder, device="cpu", dtype=torch.float16)
    assert (
        half.unet.conv_out.bias.dtype == torch.float16
        and (half.unet.conv_out.bias == 0.125).all()
    )
    full = load_pipeline(folder, device="cpu")
    assert (
        full.unet.conv_out.bias.dtype == torch.float32
        and not (full.unet.conv_out.bias == 0.125).all()
    )
