"""Loading SD 1.5 into a minsd pipeline: a diffusers-format folder, a Hugging Face hub
id (downloaded), or one .safetensors checkpoint in the original layout (single_file.py).

The configs and the tokenizer are read and checked first (configs.py), then each
weights file's header, so that a damaged file is refused before any weight is read.
minsd's UNet takes its weights with torch's load_state_dict(strict=True), whose error
names every missing, unexpected and misshapen tensor. The VAE and the text encoder load
with diffusers and transformers, which would initialise a missing weight at random:
their loading info is refused the same way. Only safetensors files are read.
"""

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from .checks import (
    check_config_argument,
    check_path_argument,
    resolve_device,
    resolve_dtype,
)
from .choices import WEIGHTS_ENV
from .configs import read_configs, read_unet_config
from .errors import InvalidValue, MissingFile, one_line
from .pipeline import StableDiffusion
from .unet import UNet, UNetConfig

DEFAULT_MODEL = Path(__file__).parent / "default_model"  # the tiny shapes model
# each part's weights file in a diffusers folder; {} is the variant, "" or ".fp16"
UNET_WEIGHTS = "diffusion_pytorch_model{}.safetensors"  # also the VAE's
WEIGHTS = dict(unet=UNET_WEIGHTS, vae=UNET_WEIGHTS, text_encoder="model{}.safetensors")
PICKLED = (".ckpt", ".pt", ".pth", ".bin", ".pkl")  # torch.save files: never read
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name


def load_pipeline(
    weights: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    config: str | os.PathLike | None = None,
) -> StableDiffusion:
    """Load SD 1.5 from a diffusers folder, a hub id or one .safetensors checkpoint.

    weights: a folder, a hub id (owner/name), a .safetensors file in the original SD
        layout, or None for $MINSD_WEIGHTS; with neither, minsd's own tiny default
        model (coloured shapes, 32 x 32; see minsd/train.py), with a one-line notice.
    device, dtype: default to CUDA in fp16 when present, else the CPU in fp32.
    config: for a single file only, a diffusers-format folder of its configs
        (default: SD 1.5's).
    """
    device = resolve_device(device)  # every argument is checked before any file is read
    dtype = resolve_dtype(dtype, device)
    check_path_argument("weights", weights)
    check_path_argument("config", config)
    weights = weights or os.environ.get(WEIGHTS_ENV) or None
    if weights is None:
        print(
            f"minsd: no SD 1.5 weights configured ({WEIGHTS_ENV} or --weights); using "
            "the default model, a tiny SD trained on coloured shapes",
            file=sys.stderr,
        )
        weights = DEFAULT_MODEL
    path = find_weights(weights, fp16=dtype == torch.float16)
    check_config_argument(config, path)
    with quiet_libraries():
        if path.is_dir():
            parts = load_folder(path, dtype)
        else:
            from .single_file import load_single_file  # which builds on this module

            parts = load_single_file(path, config)
    name = "minsd default (shapes)" if Path(weights) == DEFAULT_MODEL else str(weights)
    return StableDiffusion(**parts, device=device, dtype=dtype, name=name)


def load_folder(folder: Path, dtype: torch.dtype) -> dict:
    """StableDiffusion's parts from a diffusers folder."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    configs = read_configs(folder)
    # the fp16 files, where the folder has them and the pipeline runs in fp16
    fp16 = (folder / "unet" / UNET_WEIGHTS.format(".fp16")).is_file()
    variant = "fp16" if dtype == torch.float16 and fp16 else None
    vae_file = weights_file(folder / "vae", variant)
    text_encoder_file = weights_file(folder / "text_encoder", variant)
    unet = load_unet(folder / "unet", variant, configs.unet)
    files = dict(variant=variant, use_safetensors=True)
    # low_cpu_mem_usage=False: the default needs `accelerate`, and warns without it
    vae_options = dict(torch_dtype=dtype, low_cpu_mem_usage=False)
    vae = from_pretrained(AutoencoderKL, vae_file, **files, **vae_options)
    text_encoder = from_pretrained(
        CLIPTextModel, text_encoder_file, **files, dtype=dtype
    )
    return configs.pipeline_parts(unet=unet, vae=vae, text_encoder=text_encoder)


def load_unet(
    folder: Path, variant: str | None = None, config: UNetConfig | None = None
) -> UNet:
    """minsd's UNet from a diffusers unet/ folder (and its config, if read already)."""
    path = weights_file(folder, variant)
    with torch.device("meta"):  # nothing allocated: the weights replace everything
        unet = UNet(config or read_unet_config(folder / "config.json"))
    load_strict(unet, load_file(path), path)
    return unet


def load_strict(model: nn.Module, state: dict, source: object) -> None:
    """model.load_state_dict(state, strict=True), its error raised with the file."""
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        name = type(model).__name__
        raise InvalidValue(
            f"{source} does not fit the {name} of its config: {err}"
        ) from err


def from_pretrained(cls: type, source: Path | str, **options: object) -> nn.Module:
    """cls.from_pretrained (diffusers or transformers) of the file source, or of
    options' state_dict, refused unless every tensor fits."""
    folder = None if "state_dict" in options else Path(source).parent
    try:
        model, info = cls.from_pretrained(
            folder, output_loading_info=True, ignore_mismatched_sizes=True, **options
        )
    # the libraries raise many types; each means "these files do not make this model"
    except Exception as err:
        raise InvalidValue(
            f"{source}: no {cls.__name__} could be loaded ({type(err).__name__}: "
            f"{one_line(err)})"
        ) from err
    problems = [f"missing from the file: {k}" for k in info["missing_keys"]]
    problems += [f"not in the {cls.__name__}: {k}" for k in info["unexpected_keys"]]
    problems += [
        f"shape of {k}: file {tuple(a)}, expected {tuple(b)}"
        for k, a, b in info.get("mismatched_keys", [])
    ]
    if problems:
        name = cls.__name__
        raise InvalidValue(
            f"{source} does not fit the {name} of its config: " + "; ".join(problems)
        )
    return model


# --------------------------------------------------------------------------------------
# Where the weights are


def find_weights(weights: str | os.PathLike, fp16: bool = False) -> Path:
    """A local folder or .safetensors file; else, if the name can be a hub id
    (owner/name), its download."""
    path = Path(weights).expanduser()
    if path.is_file() and path.suffix in PICKLED:
        raise InvalidValue(
            f"{path} is a pickled checkpoint, and minsd never unpickles (loading a "
            "pickle can run any code in it). Convert it where you trust it (e.g. in a "
            "sandbox: safetensors.torch.save_file of its state_dict, or diffusers' "
            "scripts/convert_original_stable_diffusion_to_diffusers.py) and pass the "
            ".safetensors file or the folder"
        )
    if path.is_file() and path.suffix != ".safetensors":
        raise InvalidValue(
            "weights must be a diffusers-format folder or a .safetensors checkpoint, "
            f"but {path} is another file"
        )
    if path.exists():
        return path
    name = str(weights)
    if not HUB_ID.fullmatch(name) or name.endswith((".safetensors", *PICKLED)):
        raise MissingFile(
            f"{name!r} is not a local folder, and it could not be downloaded: no such "
            f"file or folder ({path.absolute()}), and it cannot be a Hugging Face hub "
            "repository id (owner/name)"
        )
    print(
        f"minsd: {name} is not a local folder (no such path: {path.absolute()}); "
        "trying it as a Hugging Face hub repository id",
        file=sys.stderr,
    )
    return download(name, path.absolute(), ".fp16" if fp16 else "")


def download(repo_id: str, local: Path, variant: str) -> Path:
    """The hub repository's diffusers folder (safetensors only), downloaded or from the
    local cache."""
    from huggingface_hub import snapshot_download

    weights = [f"{part}/{file.format(variant)}" for part, file in WEIGHTS.items()]
    patterns = ["model_index.json", "*/config.json", "scheduler/scheduler_config.json"]
    patterns += ["tokenizer/*", *weights]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    # offline, unknown repository, no access: all mean "no weights here"
    except Exception as err:
        raise MissingFile(
            f"{repo_id!r} is not a local folder (no such path: {local}), and it could "
            "not be downloaded from the Hugging Face hub as a repository id "
            f"({type(err).__name__}: {one_line(err)}). On a machine with internet "
            f"access run `hf download {repo_id} --include "
            f"{' '.join(repr(p) for p in patterns)} --local-dir sd15`, then pass the "
            f"folder (--weights sd15) or set {WEIGHTS_ENV}=sd15"
        ) from err


def weights_file(folder: Path, variant: str | None) -> Path:
    """A part's safetensors file in a diffusers folder, its header read."""
    path = folder / WEIGHTS[folder.name].format(f".{variant}" if variant else "")
    if not path.is_file():
        pickled = ", ".join(p.name for p in folder.glob("*") if p.suffix in PICKLED)
        hint = f" ({pickled} exist, but minsd never unpickles)" if pickled else ""
        raise MissingFile(f"no {folder.name} weights: {path} does not exist{hint}")
    read_header(path)
    return path


def read_header(path: Path) -> list[str]:
    """The names of a safetensors file's tensors, from its header: a damaged file is
    refused before any weight is read."""
    try:
        with safe_open(path, framework="pt") as f:
            return list(f.keys())
    except SafetensorError as err:
        raise InvalidValue(
            f"{path} is not a readable safetensors file ({err}); is it truncated, by "
            "an interrupted download or copy?"
        ) from err


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence transformers' and diffusers' progress bars and load reports: in a
    notebook the bars land on the page, and every problem a report names is raised
    here as an error."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (transformers_logging, diffusers_logging)
    saved = [(lib.is_progress_bar_enabled(), lib.get_verbosity()) for lib in libraries]
    for library in libraries:
        library.disable_progress_bar()
        library.set_verbosity_error()
    try:
        yield
    finally:
        for library, (bars, verbosity) in zip(libraries, saved):
            library.set_verbosity(verbosity)
            if bars:
                library.enable_progress_bar()
