"""Looking inside a UNet: the shapes that flow through its blocks, and where its
parameters are.

`trace_shapes` runs one forward pass with hooks on chosen modules and records, per call,
the shapes going in and out and the skips a block saves or reads. On PyTorch's meta
device (`meta_unet`) tensors have shapes but no storage and operators compute nothing,
so tracing the full SD 1.5 UNet costs no memory and almost no time. `param_rows` counts
the parameters of each top-level part, split into ResNets, transformers and the rest.
`shape_table` and `param_table` format both as Markdown tables.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .unet import (
    Downsample2D,
    ResnetBlock2D,
    Transformer2DModel,
    UNet,
    UNetConfig,
    Upsample2D,
)

Shape = tuple[int, ...]
TIMES = "\u00d7"  # the multiplication sign, for shapes written 1x320x64x64


def top_level_parts(unet: UNet) -> list[tuple[str, nn.Module]]:
    """The UNet's parts in the order its forward pass runs them, as (name, module)."""
    parts = [("time_embedding", unet.time_embedding), ("conv_in", unet.conv_in)]
    parts += [(f"down_blocks.{i}", block) for i, block in enumerate(unet.down_blocks)]
    parts += [("mid_block", unet.mid_block)]
    parts += [(f"up_blocks.{i}", block) for i, block in enumerate(unet.up_blocks)]
    parts += [("conv_norm_out", unet.conv_norm_out), ("conv_out", unet.conv_out)]
    return parts


def inner_parts(unet: UNet) -> list[tuple[str, nn.Module]]:
    """Every ResNet, transformer, down- and upsampler, as (name, module) in the order of
    definition."""
    kinds = (ResnetBlock2D, Transformer2DModel, Downsample2D, Upsample2D)
    return [
        (name, module)
        for name, module in unet.named_modules()
        if isinstance(module, kinds)
    ]


@dataclass(frozen=True)
class Call:
    """One call of a traced module: what went in and out, and the skips it saved or
    read."""

    name: str  # the module's name in the UNet, e.g. "down_blocks.1"
    type: str  # its class, e.g. "CrossAttnDownBlock2D"
    # its first argument's shape: (B, C, H, W) for blocks, (B, 320) for
    # time_embedding
    input: Shape
    output: Shape
    # a down block's skips, in the order it saves them
    skips_saved: tuple[Shape, ...] = ()
    # an up block's skips, in the order it reads them (newest first)
    skips_read: tuple[Shape, ...] = ()


def is_tensor_list(value) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(v, torch.Tensor) for v in value)
    )


def trace_shapes(
    unet: UNet,
    x: torch.Tensor,
    t: torch.Tensor,
    context: torch.Tensor,
    modules: Sequence[tuple[str, nn.Module]] | None = None,
) -> list[Call]:
    """Run unet(x, t, context) with hooks on `modules` (default: `top_level_parts`):
    one Call per call, in order.

    A down block returns (x, skips): its skips are recorded as saved. An up block is
    handed its own skips (the newest len(block.resnets) of those saved) and its ResNets
    read them newest first: they are recorded as read, in that order. The UNet's
    forward keeps conv_in's output as the first skip.
    """
    calls: list[Call | None] = []
    # (index in calls, what the pre-hook saw): hooks nest
    open_calls: list[tuple[int, dict]] = []

    def pre_hook(name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            # an up block's
            skips = next(
                (a for a in [*args, *kwargs.values()] if is_tensor_list(a)), ()
            )
            read = tuple(tuple(s.shape) for s in reversed(skips))
            seen = {
                "name": name,
                "type": type(module).__name__,
                "input": tuple(args[0].shape),
                "read": read,
            }
            open_calls.append((len(calls), seen))
            calls.append(None)  # filled in when the module returns

        return hook

    def post_hook(module: nn.Module, args: tuple, kwargs: dict, out) -> None:
        index, seen = open_calls.pop()
        saved = ()
        if isinstance(out, tuple):  # a down block: (x, skips)
            out, skips = out
            saved = tuple(tuple(s.shape) for s in skips)
        calls[index] = Call(
            seen["name"],
            seen["type"],
            seen["input"],
            tuple(out.shape),
            saved,
            seen["read"],
        )

    handles = []
    for name, module in top_level_parts(unet) if modules is None else modules:
        handles.append(
            module.register_forward_pre_hook(pre_hook(name), with_kwargs=True)
        )
        handles.append(module.register_forward_hook(post_hook, with_kwargs=True))
    try:
        with torch.no_grad():
            unet(x, t, context)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def meta_unet(
    cfg: UNetConfig, latent_size: int | tuple[int, int], n_tokens: int, batch: int = 1
) -> tuple[UNet, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A UNet of config `cfg` and inputs for it, all on the meta device: shapes
    without memory or compute.

    latent_size: h = w, or (h, w). Returns (unet, x (B, 4, h, w), t (B,), context
    (B, n_tokens, D)).
    """
    h, w = (latent_size, latent_size) if isinstance(latent_size, int) else latent_size
    with torch.device("meta"):
        unet = UNet(cfg)
        x = torch.empty(batch, cfg.in_channels, h, w)  # (B, 4, h, w)
        t = torch.empty(batch)  # (B,)
        context = torch.empty(batch, n_tokens, cfg.cross_attention_dim)  # (B, T, D)
    return unet, x, t, context


def n_params(module: nn.Module) -> int:
    """The number of parameters (scalars) of a module, its submodules included."""
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class PartParams:
    """The parameters of one top-level part of the UNet, by the kind of module that
    holds them."""

    part: str  # e.g. "down_blocks.1"
    resnets: int  # in its ResnetBlock2D modules
    # in its Transformer2DModel modules: attention, feed-forward, norms,
    # projections
    transformers: int
    # everything else: convolutions, down- and upsamplers, the time MLP, the
    # output norm
    other: int
    total: int


def param_rows(unet: UNet) -> list[PartParams]:
    """Parameters per top-level part (`top_level_parts`), in forward order; the totals
    add up to n_params(unet)."""
    rows = []
    for name, module in top_level_parts(unet):
        resnets = sum(
            n_params(m) for m in module.modules() if isinstance(m, ResnetBlock2D)
        )
        transformers = sum(
            n_params(m) for m in module.modules() if isinstance(m, Transformer2DModel)
        )
        total = n_params(module)
        rows.append(
            PartParams(
                name, resnets, transformers, total - resnets - transformers, total
            )
        )
    return rows


def format_shape(shape: Shape) -> str:
    return TIMES.join(str(n) for n in shape)


def shape_table(calls: Sequence[Call]) -> str:
    """A Markdown table of traced calls, narrow enough for a book's column: part
    (and its class),
    input and output shapes without the batch dimension (C x H x W), and the skips
    it saves or reads."""
    lines = ["| part | input | output | skips |", "|---|---|---|---|"]
    for c in calls:
        skips = "\u2013"  # an en dash: none
        if c.skips_saved:
            skips = "saves " + ", ".join(format_shape(s[1:]) for s in c.skips_saved)
        elif c.skips_read:
            skips = "reads " + ", ".join(format_shape(s[1:]) for s in c.skips_read)
        shapes = f"{format_shape(c.input[1:])} | {format_shape(c.output[1:])}"
        lines.append(f"| `{c.name}` {c.type} | {shapes} | {skips} |")
    return "\n".join(lines)


def param_table(rows: Sequence[PartParams]) -> str:
    """A Markdown table of `param_rows`, numbers right-aligned, with a total row at the
    bottom."""
    lines = [
        "| part | ResNets | transformers | other | total |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r.part}` | {r.resnets:,} | {r.transformers:,} | {r.other:,} "
            f"| {r.total:,} |"
        )
    sums = [
        sum(getattr(r, k) for r in rows)
        for k in ("resnets", "transformers", "other", "total")
    ]
    lines.append("| **total** | " + " | ".join(f"**{s:,}**" for s in sums) + " |")
    return "\n".join(lines)
