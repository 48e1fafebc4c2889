"""Bad weights and bad arguments to load_pipeline: a clear error at load time, nothing
created or destroyed.

Each row of CASES is one bad input: how to break a copy of the tiny diffusers folder (or
which argument to pass), the exception load_pipeline must raise, and a regular
expression its message must match, naming the file, the field or the value and what is
allowed. Every case copies tiny_folder into its own tmp_path (configs and tokenizer
copied, weights symlinked; a case that changes a weights file replaces its link with a
changed copy) and checks that loading created, removed and resized no file there. Bad
arguments to `generate` and to the command line are in test_bad_inputs.py.
"""

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import tiny_text_encoder
from safetensors.torch import load_file, save_file

from minsd.loading import load_pipeline


@dataclass
class Work:
    """A case's tmp_path, with a copy of tiny_folder in model/ and the tiny checkpoint
    in the original layout."""

    root: Path
    folder: Path
    checkpoint: Path  # shared by every case: read, never changed


# breaks something under work.root; returns load_pipeline's arguments
Edit = Callable[[Work], dict]
DELETE = object()  # as a field's new value: remove the field


def replace_link(path: Path) -> None:
    """Turn a symlinked weights file into a copy of its own, so that changing it leaves
    tiny_folder alone."""
    if path.is_symlink():
        data = path.read_bytes()
        path.unlink()
        path.write_bytes(data)


def write(relative: str, text: str) -> Edit:
    def edit(work: Work) -> dict:
        path = work.folder / relative
        path.unlink(missing_ok=True)
        path.write_text(text)
        return {}

    return edit


def fields(relative: str, **changes: object) -> Edit:
    """Set (or DELETE) fields of a JSON config."""

    def edit(work: Work) -> dict:
        path = work.folder / relative
        config = json.loads(path.read_text())
        for key, value in changes.items():
            config.pop(key) if value is DELETE else config.__setitem__(key, value)
        path.write_text(json.dumps(config))
        return {}

    return edit


def truncate(relative: str, keep: float = 0.5) -> Edit:
    """Keep the first part of a file, as an interrupted download or copy does."""

    def edit(work: Work) -> dict:
        path = work.folder / relative
        data = path.read_bytes()
        path.unlink()
        path.write_bytes(data[: int(len(data) * keep)])
        return {}

    return edit


def remove(relative: str, rename_to: str | None = None) -> Edit:
    def edit(work: Work) -> dict:
        path = work.folder / relative
        if rename_to is not None:
            replace_link(path)
            path.rename(path.with_name(rename_to))
        elif path.is_dir():
            shutil.rmtree(path)
            path.mkdir()  # the folder stays, empty
        else:
            path.unlink()
        return {}

    return edit


def tensors(relative: str, drop: tuple[str, ...] = (), add: dict | None = None) -> Edit:
    """Drop tensors from, or add tensors to, a weights file."""

    def edit(work: Work) -> dict:
        path = work.folder / relative
        state = {k: v for k, v in load_file(path).items() if k not in drop} | (
            add or {}
        )
        path.unlink()
        save_file(state, path)
        return {}

    return edit


def text_encoder_of_width(width: int) -> Edit:
    """A real text encoder (config and weights) whose output is not as wide as the
    UNet's cross-attention reads."""

    def edit(work: Work) -> dict:
        shutil.rmtree(work.folder / "text_encoder")
        tiny_text_encoder(width).save_pretrained(
            work.folder / "text_encoder", safe_serialization=True
        )
        return {}

    return edit


def arguments(**kwargs: object) -> Edit:
    """Bad arguments for the good folder."""
    return lambda work: kwargs


def weights(name: str, content: bytes | None = None, folder: bool = False) -> Edit:
    """weights=name, relative to the case's tmp_path (the working folder), made a file
    or a folder if asked."""

    def edit(work: Work) -> dict:
        if content is not None:
            (work.root / name).write_bytes(content)
        if folder:
            (work.root / name).mkdir()
        return {"weights": name}

    return edit


def single_file(
    config: str | None = "model",
    drop_prefix: str | None = None,
    drop: tuple[str, ...] = (),
    keep: float = 1.0,
) -> Edit:
    """The tiny checkpoint (or a changed copy) as weights, with config= the copied
    folder (or as given)."""

    def edit(work: Work) -> dict:
        path = work.root / "tiny.safetensors"
        if drop_prefix is None and not drop and keep == 1.0:
            path.symlink_to(work.checkpoint)
        elif keep < 1.0:
            data = work.checkpoint.read_bytes()
            path.write_bytes(data[: int(len(data) * keep)])
        else:
            state = {
                k: v for k, v in load_file(work.checkpoint).items() if k not in drop
            }
            save_file(
                {
                    k: v
                    for k, v in state.items()
                    if not k.startswith(drop_prefix or "\0")
                },
                path,
            )
        return {"weights": path} | (
            {"config": work.root / config} if config is not None else {}
        )

    return edit


UNET = r"unet/config\.json does not describe an SD 1\.5-shaped UNet .*"
# Fields of diffusers' UNet2DConditionModel config that change the function: a value
# minsd does not implement, and SD 1.5's (its config, else diffusers' default), which
# the message must name.
UNET_BAD_VALUES = {
    "center_input_sample": (True, False),
    "flip_sin_to_cos": (False, True),
    "freq_shift": (1, 0),
    "time_embedding_type": ("fourier", "positional"),
    "time_embedding_dim": (64, None),
    "time_embedding_act_fn": ("silu", None),
    "timestep_post_act": ("silu", None),
    "time_cond_proj_dim": (256, None),
    "act_fn": ("gelu", "silu"),
    "norm_eps": (1e-06, 1e-05),
    "conv_in_kernel": (5, 3),
    "conv_out_kernel": (1, 3),
    "downsample_padding": (0, 1),
    "mid_block_type": ("UNetMidBlock2DSimpleCrossAttn", "UNetMidBlock2DCrossAttn"),
    "mid_block_scale_factor": (2, 1),
    "resnet_time_scale_shift": ("scale_shift", "default"),
    "resnet_skip_time_act": (True, False),
    "resnet_out_scale_factor": (2.0, 1.0),
    "transformer_layers_per_block": (2, 1),
    "reverse_transformer_layers_per_block": ([[1], [1], [1], [1]], None),
    "num_attention_heads": (2, None),
    "use_linear_projection": (True, False),
    "only_cross_attention": (True, False),
    "mid_block_only_cross_attention": (True, None),
    "dual_cross_attention": (True, False),
    "upcast_attention": (True, False),
    "cross_attention_norm": ("group_norm", None),
    "attention_type": ("gated", "default"),
    "encoder_hid_dim": (64, None),
    "encoder_hid_dim_type": ("text_proj", None),
    "class_embed_type": ("timestep", None),
    "num_class_embeds": (10, None),
    "class_embeddings_concat": (True, False),
    "projection_class_embeddings_input_dim": (16, None),
    "addition_embed_type": ("text", None),
    "addition_time_embed_dim": (8, None),
    "addition_embed_type_num_heads": (8, 64),
}
SCHEDULER = "scheduler/scheduler_config.json"
NO_SUCH_PATH = r"no such file or folder \(/.*\)\. minsd reads local weights only"

# fmt: off
CASES = [
    # (name, edit, exception, regular expression the message must match)
    # -- configs that are not JSON, or not a JSON object, or empty
    ("model_index not JSON", write("model_index.json", "{ x"), ValueError, r"model_index\.json is not valid JSON"),
    ("unet config not JSON", write("unet/config.json", '{"a": 1,'), ValueError, r"unet/config\.json is not valid JSON"),
    ("unet config empty file", write("unet/config.json", ""), ValueError, r"unet/config\.json is not valid JSON"),
    ("unet config a list", write("unet/config.json", "[]"), ValueError, r"unet/config\.json must hold a JSON object"),
    ("unet config {}", write("unet/config.json", "{}"), ValueError, UNET + r"_class_name=None"),
    ("vae config not JSON", write("vae/config.json", "nope"), ValueError, r"vae/config\.json is not valid JSON"),
    ("vae config {}", write("vae/config.json", "{}"), ValueError, r"vae/config\.json: _class_name=None"),
    ("text encoder config not JSON", write("text_encoder/config.json", "{"), ValueError, r"encoder/config\.json is no"),
    ("text encoder config {}", write("text_encoder/config.json", "{}"), ValueError, r"config\.json: model_type=None"),
    ("scheduler config not JSON", write(SCHEDULER, "}"), ValueError, r"scheduler_config\.json is not valid JSON"),
    ("scheduler config {}", write(SCHEDULER, "{}"), ValueError, r"config\.json: beta_schedule='linear' .*default"),
    ("tokenizer config not JSON", write("tokenizer/tokenizer_config.json", "{"), ValueError, r"tokenizer_config\.json"),
    ("tokenizer.json {}", write("tokenizer/tokenizer.json", "{}"), ValueError, r"tokenizer: no CLIP tokenizer could"),
    ("tokenizer folder empty", remove("tokenizer"), FileNotFoundError, r"tokenizer holds no CLIP tokenizer"),
    ("tokenizer without max length", fields("tokenizer/tokenizer_config.json", model_max_length=DELETE), ValueError,
     r"text_encoder/config\.json: max_position_embeddings=77, but the tokenizer \(.*/tokenizer\) reads model_max_length=\d+"),
    ("model_index missing", remove("model_index.json"), FileNotFoundError, r"missing: .*model_index\.json"),
    # -- damaged or missing weights files, and weights that do not fit their config
    ("unet weights truncated", truncate("unet/diffusion_pytorch_model.safetensors"), ValueError,
     r"unet/diffusion_pytorch_model\.safetensors is not a readable safetensors file .*truncated"),
    ("unet weights empty", truncate("unet/diffusion_pytorch_model.safetensors", 0), ValueError,
     r"unet/diffusion_pytorch_model\.safetensors is not a readable safetensors file \(.*header too small"),
    ("vae weights truncated", truncate("vae/diffusion_pytorch_model.safetensors", 0.9), ValueError,
     r"vae/diffusion_pytorch_model\.safetensors is not a readable safetensors file"),
    ("text encoder weights truncated", truncate("text_encoder/model.safetensors", 0.99), ValueError,
     r"text_encoder/model\.safetensors is not a readable safetensors file"),
    ("vae weights missing", remove("vae/diffusion_pytorch_model.safetensors"), FileNotFoundError,
     r"no vae weights: .*vae/diffusion_pytorch_model\.safetensors does not exist"),
    ("text encoder weights pickled", remove("text_encoder/model.safetensors", rename_to="pytorch_model.bin"),
     FileNotFoundError, r"no text_encoder weights: .*\(pytorch_model\.bin exist, but minsd never unpickles"),
    ("vae weights lack a tensor", tensors("vae/diffusion_pytorch_model.safetensors", drop=("decoder.conv_out.bias",)),
     ValueError, r"vae/diffusion_pytorch_model\.safetensors does not fit the AutoencoderKL of its config: missing from the file: decoder\.conv_out\.bias"),
    ("text encoder weights have more", tensors("text_encoder/model.safetensors", add={"extra.weight": torch.ones(2)}),
     ValueError, r"text_encoder/model\.safetensors does not fit the CLIPTextModel of its config: not in the CLIPTextModel: extra\.weight"),
    ("unet weights lack a tensor", tensors("unet/diffusion_pytorch_model.safetensors", drop=("conv_in.bias",)),
     ValueError, r"unet/diffusion_pytorch_model\.safetensors does not fit the UNet of its config: .*Missing key\(s\) in state_dict: \"conv_in\.bias\""),
    # -- parts that do not fit each other
    ("text encoder 48 wide", text_encoder_of_width(48), ValueError,
     r"text_encoder/config\.json: hidden_size=48, but the UNet's cross-attention reads .*cross_attention_dim=32"),
    ("unet without cross_attention_dim", fields("unet/config.json", cross_attention_dim=DELETE), ValueError,
     r"text_encoder/config\.json: hidden_size=32, .*cross_attention_dim=1280"),
    ("vae latent channels 8", fields("vae/config.json", latent_channels=8), ValueError,
     r"vae/config\.json: latent_channels=8, but the UNet reads in_channels=4"),
    ("vae shift factor", fields("vae/config.json", shift_factor=0.1), ValueError, r"config\.json: shift_factor=0\.1"),
    ("vae another class", fields("vae/config.json", _class_name="AutoencoderTiny"), ValueError,
     r"vae/config\.json: _class_name='AutoencoderTiny' \(SD 1\.5: 'AutoencoderKL'\)"),
    ("vae greyscale", fields("vae/config.json", out_channels=1), ValueError, r"vae/config\.json: out_channels=1 \(SD 1\.5: 3\)"),
    ("text encoder 16 positions", fields("text_encoder/config.json", max_position_embeddings=16), ValueError,
     r"text_encoder/config\.json: max_position_embeddings=16, but the tokenizer \(.*/tokenizer\) reads model_max_length=77"),
    ("preview factors not JSON", write("vae/preview_factors.json", "[[0.3,"), ValueError,
     r"vae/preview_factors\.json is not a JSON table of numbers"),
    ("preview factors for RGB latents", write("vae/preview_factors.json", "[[1, 0, 0], [0, 1, 0], [0, 0, 1]]"),
     ValueError, r"preview_factors\.json holds a \(3, 3\) table; expected one row .* per latent channel: \(4, 3\)"),
    ("text encoder vocabulary small", fields("text_encoder/config.json", vocab_size=100), ValueError,
     r"text_encoder/config\.json: vocab_size=100, but the tokenizer's ids go up to \d+"),
    # -- UNet configs minsd does not implement: every field of the table, then the sizes
    *[
        (f"unet {field}", fields("unet/config.json", **{field: bad}), ValueError,
         UNET + re.escape(f"{field}={bad!r} (SD 1.5: {sd15!r})"))
        for field, (bad, sd15) in UNET_BAD_VALUES.items()
    ],
    ("unet unknown field", fields("unet/config.json", magic_scale=2), ValueError,
     UNET + r"magic_scale=2 \(a field minsd does not know\)"),
    ("unet another class", fields("unet/config.json", _class_name="UNet2DModel"), ValueError,
     UNET + r"_class_name='UNet2DModel'"),
    ("unet heads do not divide", fields("unet/config.json", attention_head_dim=3), ValueError,
     UNET + r"attention_head_dim=3 does not divide every block_out_channels \[32, 64, 64, 64\]"),
    ("unet groups do not divide", fields("unet/config.json", norm_num_groups=5), ValueError,
     UNET + r"norm_num_groups=5 does not divide"),
    ("unet no sample size", fields("unet/config.json", sample_size=None), ValueError,
     UNET + r"sample_size=None \(must be one positive integer\)"),
    ("unet layers a string", fields("unet/config.json", layers_per_block="2"), ValueError, UNET + r"layers_per_block="),
    ("unet inpainting channels", fields("unet/config.json", in_channels=9), ValueError,
     UNET + r"out_channels=4 differs from in_channels=9"),
    ("unet channels not a list", fields("unet/config.json", block_out_channels=320), ValueError,
     UNET + r"block_out_channels=320 \(must be a list of positive integers\)"),
    # -- scheduler configs of another schedule or another kind of network
    ("zero terminal SNR", fields(SCHEDULER, rescale_betas_zero_snr=True), ValueError,
     r"scheduler_config\.json: rescale_betas_zero_snr=True \(SD 1\.5: False\)"),
    ("trained betas", fields(SCHEDULER, trained_betas=[0.1, 0.2]), ValueError, r"trained_betas=\[0\.1, 0\.2\]"),
    ("linear betas", fields(SCHEDULER, beta_schedule="linear"), ValueError,
     r"beta_schedule='linear' \(SD 1\.5: 'scaled_linear'\)"),
    ("v-prediction", fields(SCHEDULER, prediction_type="v_prediction"), ValueError,
     r"prediction_type='v_prediction' \(SD 1\.5: 'epsilon'\).*eps-prediction"),
    ("sample prediction", fields(SCHEDULER, prediction_type="sample"), ValueError, r"prediction_type='sample'"),
    ("continuous timesteps", fields(SCHEDULER, timestep_type="continuous"), ValueError, r"timestep_type='continuous'"),
    ("betas reversed", fields(SCHEDULER, beta_start=0.02), ValueError,
     r"beta_start=0\.02, beta_end=0\.012 \(0 < beta_start < beta_end < 1\)"),
    ("no timesteps", fields(SCHEDULER, num_train_timesteps=0), ValueError, r"num_train_timesteps=0"),
    # -- load_pipeline's own arguments, refused before any file is read
    ("device not available", arguments(device="cuda:99"), ValueError, r"device 'cuda:99' is not available"),
    ("device xpu", arguments(device="xpu"), ValueError, r"'xpu'.* 'cpu'"),
    ("device nonsense", arguments(device="gpu please"), ValueError, r"'gpu please' is not a device; expected 'cpu'"),
    ("device a number", arguments(device=3), TypeError, r"device must be None, a string"),
    ("dtype a string", arguments(dtype="float16"), TypeError, r"dtype must be None or a floating-point torch\.dtype"),
    ("dtype integer", arguments(dtype=torch.int64), TypeError, r"floating-point torch\.dtype .*got torch\.int64"),
    ("dtype bool", arguments(dtype=torch.bool), TypeError, r"floating-point torch\.dtype .*got torch\.bool"),
    ("weights a number", arguments(weights=42), TypeError, r"weights must be None or a path \(a str or os\.PathLike\), got int: 42"),
    ("weights a state dict", arguments(weights={"conv_in.weight": 0}), TypeError, r"weights must be .*got dict"),
    ("weights bytes", arguments(weights=b"model"), TypeError, r"weights must be .*got bytes"),
    ("weights empty string", arguments(weights=""), ValueError, r"weights is an empty string"),
    ("config a number", arguments(config=7), TypeError, r"config must be None or a path .*got int: 7"),
    ("config for a folder", lambda work: {"config": work.folder}, ValueError, r"config is for single-file checkpoints"),
    # -- paths: missing (nothing is downloaded), files that are not safetensors
    ("absolute path missing", lambda work: {"weights": str(work.root / "sd15")}, FileNotFoundError,
     r"sd15': no such file or folder \(/.*/sd15\)\. minsd reads local weights only"),
    ("./ path missing", weights("./sd15"), FileNotFoundError, r"'\./sd15': " + NO_SUCH_PATH),
    ("~ path missing", weights("~/minsd-no-such-model"), FileNotFoundError, r"'~/minsd-no-such-model': " + NO_SUCH_PATH),
    ("two slashes missing", weights("models/sd15/v1"), FileNotFoundError, r"'models/sd15/v1': " + NO_SUCH_PATH),
    ("safetensors missing", weights("sd15.safetensors"), FileNotFoundError, r"'sd15\.safetensors': " + NO_SUCH_PATH),
    ("hub id", weights("stable-diffusion-v1-5/stable-diffusion-v1-5"), FileNotFoundError,
     r"'stable-diffusion-v1-5/stable-diffusion-v1-5': " + NO_SUCH_PATH + r".*downloads nothing; .*`hf download "
     r"stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir sd15 .*` .*--weights sd15 or set MINSD_WEIGHTS=sd15"),
    ("ckpt file", weights("model.ckpt", b"\x80\x04 a pickle"), ValueError,
     r"model\.ckpt is a pickled checkpoint, and minsd never unpickles .*convert"),
    ("bin file", weights("pytorch_model.bin", b"\x80\x04"), ValueError, r"pytorch_model\.bin is a pickled checkpoint"),
    ("pt file", weights("model.pt", b"\x80\x04"), ValueError, r"model\.pt is a pickled checkpoint"),
    ("text file", weights("notes.txt", b"sd 1.5"), ValueError, r"notes\.txt is another file"),
    ("empty folder", weights("empty", folder=True), FileNotFoundError,
     r"empty is not a diffusers-format Stable Diffusion folder; missing: .*model_index\.json"),
    ("the model's parent folder", lambda work: {"weights": work.root}, FileNotFoundError,
     r"is not a diffusers-format Stable Diffusion folder; missing: .*model_index\.json, .*unet/"),
    # -- single-file checkpoints
    ("single file truncated", single_file(keep=0.5), ValueError,
     r"tiny\.safetensors is not a readable safetensors file"),
    ("single file without VAE", single_file(drop_prefix="first_stage_model."), ValueError,
     r"tiny\.safetensors holds no VAE in the original SD layout \(no key starts with first_stage_model\."),
    ("single file without text encoder", single_file(drop_prefix="cond_stage_model."), ValueError,
     r"tiny\.safetensors holds no text encoder in the original SD layout"),
    ("single file lacks a tensor", single_file(drop=("model.diffusion_model.out.2.bias",)), ValueError,
     r"tiny\.safetensors \(converted .*\) does not fit the UNet of its config: .*Missing key\(s\) in state_dict: \"conv_out\.bias\""),
    ("single file, SD 1.5 configs", single_file(config=None), ValueError,
     r"does not fit the UNet of its config: .*size mismatch for conv_in\.weight: copying a param with shape torch\.Size\(\[32, 4, 3, 3\]\)"),
    ("single file, config missing", single_file(config="no-such-configs"), FileNotFoundError,
     r"no-such-configs is not a diffusers-format Stable Diffusion folder; missing: .*model_index\.json"),
    ("single file, config not a model", single_file(config="model/unet"), FileNotFoundError,
     r"unet is not a diffusers-format Stable Diffusion folder"),
    ("a diffusers UNet file alone", lambda work: {"weights": work.folder / "unet/diffusion_pytorch_model.safetensors"},
     ValueError, r"holds no UNet in the original SD layout \(no key starts with model\.diffusion_model\."),
]
# fmt: on


def copy_model(source: Path, folder: Path) -> None:
    """tiny_folder's configs and tokenizer copied, its weights symlinked (cases that
    change one replace it)."""
    folder.mkdir()
    for path in sorted(source.rglob("*")):
        target = folder / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True)
        elif path.suffix == ".safetensors":
            target.symlink_to(path)
        else:
            shutil.copy(path, target)


def listing(root: Path) -> dict[str, int]:
    """Every path under root and its size (of the link itself for a symlink)."""
    return {str(p.relative_to(root)): p.lstat().st_size for p in root.rglob("*")}


@pytest.fixture
def work(tmp_path, tiny_folder, tiny_checkpoint, monkeypatch) -> Work:
    monkeypatch.chdir(tmp_path)  # relative weights paths resolve in tmp_path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MINSD_WEIGHTS", raising=False)
    copy_model(tiny_folder, tmp_path / "model")
    return Work(tmp_path, tmp_path / "model", tiny_checkpoint)


def test_the_unbroken_copy_loads(work, tiny_folder):
    """The copy every case starts from is good: it loads and changes nothing in
    tiny_folder."""
    before = listing(tiny_folder)
    pipe = load_pipeline(work.folder, device="cpu")
    assert pipe.unet.config.cross_attention_dim == 32 and listing(tiny_folder) == before


@pytest.mark.parametrize(
    ("name", "edit", "error", "pattern"), CASES, ids=[case[0] for case in CASES]
)
def test_bad_input_is_refused_at_load_time(
    work, tiny_folder, name, edit, error, pattern
):
    originals = listing(tiny_folder)
    load_arguments = {"weights": work.folder, "device": "cpu"} | edit(work)
    before = listing(work.root)
    with pytest.raises(error) as caught:
        load_pipeline(**load_arguments)
    assert re.search(pattern, str(caught.value), re.DOTALL), f"{name}: {caught.value}"
    assert listing(work.root) == before, (
        f"{name}: loading created, removed or changed files"
    )
    assert listing(tiny_folder) == originals


def test_the_cases_are_distinct_and_many():
    names = [case[0] for case in CASES]
    assert len(set(names)) == len(names) >= 25


def test_the_unet_cases_are_diffusers_fields():
    """Each field of UNET_BAD_VALUES is an argument of diffusers' UNet2DConditionModel
    (a case of a field diffusers dropped would test nothing)."""
    import inspect

    from diffusers import UNet2DConditionModel

    parameters = inspect.signature(UNet2DConditionModel.__init__).parameters
    assert UNET_BAD_VALUES.keys() <= parameters.keys()
