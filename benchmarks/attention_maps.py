"""What recording cross-attention maps costs, and that not recording costs nothing.

    python benchmarks/attention_maps.py [--repeats 9] [--before GIT_REVISION]

One UNet forward (batch 2, as under guidance), three ways, on identical random weights:
diffusers' UNet2DConditionModel, minsd's UNet (recording off: every attention one fused
SDPA call) and minsd's UNet while `recording_cross_attention` is active (cross-attention
written out, probabilities kept). Rounds alternate the order, and ratios are taken
within a round (see common.rounds), so a busy machine hits every side alike. One CPU
thread. With --before, minsd's UNet as it was at that git revision runs too (from `git
show REV:minsd/unet.py`), so that "off" can be compared with the code before recording
existed.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

# run from anywhere in the checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cpu_name, paired_ratio, rounds, table, unet_pair  # noqa: E402

from minsd.attention_maps import recording_cross_attention  # noqa: E402
from minsd.configs import unet_config_from_diffusers  # noqa: E402
from minsd.loading import DEFAULT_MODEL  # noqa: E402
from minsd.unet import UNetConfig  # noqa: E402


def unet_at(revision: str) -> type:
    """The UNet class of minsd/unet.py at a git revision (the file imports only
    torch)."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{revision}:minsd/unet.py"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "unet_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("unet_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.UNet


def time_case(
    name: str, cfg: UNetConfig, size: int, repeats: int, before_class: type | None
) -> list[str]:
    """One table row: the three (or four) UNets timed in alternating rounds at size x
    size latents."""
    reference, unet = unet_pair(cfg, "cpu", torch.float32)
    torch.manual_seed(0)
    x, t = torch.randn(2, cfg.in_channels, size, size), torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, cfg.cross_attention_dim)

    def recording() -> None:
        with recording_cross_attention(unet):
            unet(x, t, context)

    fns = {
        "diffusers": lambda: reference(x, t, context),
        "off": lambda: unet(x, t, context),
        "on": recording,
    }
    if before_class is not None:
        before = before_class(cfg).eval()
        before.load_state_dict(unet.state_dict())
        fns["before"] = lambda: before(x, t, context)
    with torch.no_grad():
        for fn in fns.values():
            fn()  # warm-up
        times = rounds(fns, repeats, "cpu")
    off, low_off, high_off = paired_ratio(times["off"], times["diffusers"])
    on, low_on, high_on = paired_ratio(times["on"], times["off"])
    median_ms = sorted(times["off"])[len(times["off"]) // 2] * 1000
    row = [
        f"{name}, {size}x{size} latents",
        f"{median_ms:.1f}",
        f"{off:.3f} ({low_off:.2f}-{high_off:.2f})",
        f"{on:.3f} ({low_on:.2f}-{high_on:.2f})",
    ]
    if before_class is not None:
        ratio, low, high = paired_ratio(times["off"], times["before"])
        row.append(f"{ratio:.3f} ({low:.2f}-{high:.2f})")
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--before",
        default=None,
        help="a git revision whose UNet to time beside today's",
    )
    args = parser.parse_args()
    before_class = unet_at(args.before) if args.before else None
    torch.set_num_threads(1)
    default = unet_config_from_diffusers(
        json.loads((DEFAULT_MODEL / "unet" / "config.json").read_text())
    )
    cases = [("default model", default, 8), ("SD 1.5", UNetConfig(), 16)]
    rows = [
        time_case(name, cfg, size, args.repeats, before_class)
        for name, cfg, size in cases
    ]
    print(
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread, {args.repeats} rounds"
    )
    header = [
        "UNet",
        "minsd off, ms",
        "off / diffusers (range)",
        "recording / off (range)",
    ]
    if before_class is not None:
        header.append(f"off / minsd at {args.before} (range)")
    print(table(rows, header))


if __name__ == "__main__":
    main()
