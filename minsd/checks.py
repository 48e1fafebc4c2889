"""What minsd refuses, and the message that says why.

The modules that tell the story (the UNet, the denoiser, the samplers, the pipeline,
loading) call these checks in one line where they guard, so that the story reads first.
Every error names the wrong value and what is allowed; nothing is silently fixed.
"""

import numbers

import torch


def is_integer(value: object) -> bool:
    """int or numpy integer, but not bool (True is an int in Python, never a count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_positive_integer(value: object) -> bool:
    return is_integer(value) and value > 0


def is_number(value: object) -> bool:
    """int, float or numpy number, but not bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_num_steps(num_steps: int) -> None:
    if not is_positive_integer(num_steps):
        raise ValueError(
            "the number of sampling steps must be a positive integer, "
            f"got {type(num_steps).__name__}: {num_steps!r}"
        )


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA; fp32 elsewhere (fp16 on a CPU fails or crawls, bf16 is 15-200x
    slower here)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def resolve_device(device: torch.device | str | None) -> torch.device:
    """The device to run on: None for the default, else one that exists here (refused
    by name if not)."""
    if device is None:
        return default_device()
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            "device must be None, a string such as 'cuda' or 'cpu', or a torch.device, "
            f"got {device!r}"
        )
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"{device!r} is not a device; expected 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from err
    if device.type == "cuda":
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n_gpus == 0:
            build = (
                "a CPU-only build of torch"
                if torch.version.cuda is None
                else "no GPU visible"
            )
            raise ValueError(
                f"device {str(device)!r} is not available ({build}); use device='cpu'"
            )
        if device.index is not None and device.index >= n_gpus:
            raise ValueError(
                f"device {str(device)!r} is not available: this machine has {n_gpus} "
                "GPU(s)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device {str(device)!r} is not available on this machine; use device='cpu'"
        )
    elif device.type not in ("cpu", "mps"):
        raise ValueError(
            f"device {str(device)!r}: minsd runs on 'cpu', 'cuda' or 'mps'"
        )
    return device


def resolve_dtype(dtype: torch.dtype | None, device: torch.device) -> torch.dtype:
    """The network's dtype: None for the device's default, else a floating-point
    torch.dtype."""
    if dtype is None:
        return default_dtype(device)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            "dtype must be None or a floating-point torch.dtype such as torch.float16 "
            f"or torch.float32, got {dtype!r}"
        )
    return dtype
