"""The weights files: where they are, and whether their tensors fit the model.

A name is a local folder or .safetensors file, or else a Hugging Face hub id
(owner/name), downloaded (safetensors only). Pickled checkpoints (.ckpt, .bin, ...) are
refused by name: loading one can run any code in it. A safetensors file's header (the
name and shape of every tensor) is read and compared with the model before any weight
is; an error names the file and the first tensors that do not fit.
"""

import os
import re
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

WEIGHTS_ENV = "MINSD_WEIGHTS"
UNET_WEIGHTS = "diffusion_pytorch_model{variant}.safetensors"  # also the VAE's
TEXT_ENCODER_WEIGHTS = "model{variant}.safetensors"
# torch.save files: loading one can run any code in it
PICKLED = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name


# --------------------------------------------------------------------------------------
# Where the weights are


def find_weights(weights: str | os.PathLike, fp16: bool = False) -> Path:
    """A local folder or .safetensors file; else, if the name can be a hub id
    (owner/name), its download."""
    path = Path(weights).expanduser()
    if path.is_file() and path.suffix in PICKLED:
        raise ValueError(
            f"{path} is a pickled checkpoint, and minsd never unpickles (loading a "
            "pickle can run any code in it). Convert it where you trust it (e.g. in a "
            "sandbox: safetensors.torch.save_file of its state_dict, or diffusers' "
            "scripts/convert_original_stable_diffusion_to_diffusers.py) and pass the "
            ".safetensors file or the folder"
        )
    if path.is_file() and path.suffix != ".safetensors":
        raise NotADirectoryError(
            "weights must be a diffusers-format folder or a .safetensors checkpoint, "
            f"but {path} is another file"
        )
    if path.exists():
        return path
    name = str(weights)
    if not HUB_ID.fullmatch(name) or name.endswith((".safetensors", *PICKLED)):
        raise FileNotFoundError(
            f"{name!r} is not a local folder, and it could not be downloaded: no such "
            f"file or folder ({path.absolute()}), and it cannot be a Hugging Face hub "
            "repository id (owner/name)"
        )
    print(
        f"minsd: {name} is not a local folder (no such path: {path.absolute()}); "
        "trying it as a Hugging Face hub repository id",
        file=sys.stderr,
    )
    return download(name, path.absolute(), fp16)


def download(repo_id: str, local: Path, fp16: bool) -> Path:
    """The hub repository's diffusers folder (safetensors only), downloaded or from the
    local cache."""
    from huggingface_hub import snapshot_download

    variant = ".fp16" if fp16 else ""
    patterns = [
        "model_index.json",
        "*/config.json",
        "scheduler/scheduler_config.json",
        "tokenizer/*",
        f"unet/{UNET_WEIGHTS.format(variant=variant)}",
        f"vae/{UNET_WEIGHTS.format(variant=variant)}",
        f"text_encoder/{TEXT_ENCODER_WEIGHTS.format(variant=variant)}",
    ]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    # offline, unknown repository, no access: all mean "no weights here"
    except Exception as err:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local folder (no such path: {local}), and it could "
            "not be downloaded from the Hugging Face hub as a repository id "
            f"({type(err).__name__}: {one_line(err)}). On a machine with internet "
            f"access run `hf download {repo_id} --include "
            f"{' '.join(repr(p) for p in patterns)} --local-dir sd15`, then pass the "
            f"folder (--weights sd15) or set {WEIGHTS_ENV}=sd15"
        ) from err


def check_path_argument(name: str, value: object) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{name} must be None or a path or hub id (a str or os.PathLike), got "
            f"{type(value).__name__}: {value!r:.80}"
        )
    if isinstance(value, str) and not value.strip():
        raise ValueError(
            f"{name} is an empty string; give a folder, a .safetensors file or a hub "
            "id, or None"
        )


def check_config_argument(config: str | os.PathLike | None, weights: Path) -> None:
    """config names the configs of a single-file checkpoint: a folder, and only for a
    file."""
    if config is not None and weights.is_dir():
        raise ValueError(
            f"config is for single-file checkpoints; {weights} is a folder with its "
            "own configs"
        )
    if config is not None and not Path(config).expanduser().is_dir():
        raise FileNotFoundError(
            "config must be a diffusers-format folder of configs; "
            f"{config} is not a folder"
        )


def one_line(err: BaseException) -> str:
    """A library's error message on one line: the command line prints each error as
    one."""
    return " ".join(str(err).split())


# --------------------------------------------------------------------------------------
# Do they fit? Headers first, then every key and shape


def weights_file(folder: Path, pattern: str, variant: str | None, part: str) -> Path:
    """The safetensors file of a part, its header read (a damaged file is refused before
    any weight is read)."""
    path = folder / pattern.format(variant=f".{variant}" if variant else "")
    if not path.is_file():
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED)
        hint = (
            f" ({', '.join(pickled)} exist, but minsd never unpickles; convert them "
            "to safetensors)"
            if pickled
            else ""
        )
        raise FileNotFoundError(f"no {part} weights: {path} does not exist{hint}")
    read_safetensors_header(path)
    return path


def read_safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """The names and shapes of a safetensors file's tensors, from its header; a damaged
    file is refused."""
    try:
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except SafetensorError as err:
        raise ValueError(
            f"{path} is not a readable safetensors file ({err}); is it truncated, by "
            "an interrupted download or copy?"
        ) from err


def check_state_dict_shapes(
    model: torch.nn.Module,
    found: dict[str, tuple[int, ...]],
    source: str,
    what: str,
    show: int = 5,
) -> None:
    """Compare a file's tensor names and shapes with the model's; name the first
    mismatches."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    refuse_weights(
        f"{source} does not fit {what} of this config ({len(found)} tensors, "
        f"expected {len(expected)})",
        [f"shape of {k}: file {found[k]}, expected {expected[k]}" for k in wrong],
        [f"missing from the file: {k} {expected[k]}" for k in missing],
        [f"not in {what}: {k} {found[k]}" for k in unexpected],
        show,
    )


def from_pretrained_checked(
    cls: type, source: str | Path, *args: object, **kwargs: object
) -> torch.nn.Module:
    """cls.from_pretrained (diffusers or transformers) that refuses a file whose tensors
    do not all fit."""
    try:
        model, info = cls.from_pretrained(
            *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    # the libraries raise many types; each means "these files do not make this
    # model"
    except Exception as err:
        raise ValueError(
            f"{source}: no {cls.__name__} could be loaded ({type(err).__name__}: "
            f"{one_line(err)})"
        ) from err
    refuse_weights(
        f"{source} does not fit the {cls.__name__} of its config",
        [
            f"shape of {k}: file {tuple(a)}, expected {tuple(b)}"
            for k, a, b in sorted(info.get("mismatched_keys", []))
        ],
        [f"missing from the file: {k}" for k in sorted(info.get("missing_keys", []))],
        [
            f"not in the {cls.__name__}: {k}"
            for k in sorted(info.get("unexpected_keys", []))
        ],
    )
    return model


def refuse_weights(
    title: str,
    wrong: list[str],
    missing: list[str],
    unexpected: list[str],
    show: int = 5,
) -> None:
    """One error listing the first few problems of each kind, if there are any."""
    lines = []
    for problems in (wrong, missing, unexpected):
        lines += [f"  {p}" for p in problems[:show]]
        lines += (
            [f"  ... and {len(problems) - show} more like it"]
            if len(problems) > show
            else []
        )
    if lines:
        raise ValueError("\n".join([f"{title}:", *lines]))
