"""minsd.anatomy against diffusers' UNet2DConditionModel: the same shapes per block, the
same parameters per part."""

import pytest
import torch
from conftest import TINY_UNET_CONFIGS, diffusers_unet
from diffusers import UNet2DConditionModel
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from minsd.anatomy import (
    meta_unet,
    n_params,
    param_rows,
    param_table,
    shape_table,
    trace_shapes,
)
from minsd.configs import diffusers_unet_config
from minsd.unet import UNet, UNetConfig

SD15_PARAMETERS = 859_520_964  # SD 1.5's UNet, as published
PARTS = [
    "time_embedding",
    "conv_in",
    *[f"down_blocks.{i}" for i in range(4)],
    "mid_block",
]
PARTS += [*[f"up_blocks.{i}" for i in range(4)], "conv_norm_out", "conv_out"]


def diffusers_parts(reference: UNet2DConditionModel) -> dict[str, tuple[int, int, int]]:
    """Per top-level part of diffusers' UNet: (parameters in ResnetBlock2D, in
    Transformer2DModel, in all)."""
    counts = {}
    for name in PARTS:
        part = reference.get_submodule(name)
        resnets = sum(
            p.numel()
            for m in part.modules()
            if isinstance(m, ResnetBlock2D)
            for p in m.parameters()
        )
        transformers = sum(
            p.numel()
            for m in part.modules()
            if isinstance(m, Transformer2DModel)
            for p in m.parameters()
        )
        counts[name] = (
            resnets,
            transformers,
            sum(p.numel() for p in part.parameters()),
        )
    return counts


def diffusers_shapes(reference: UNet2DConditionModel, x, t, context) -> dict[str, dict]:
    """Per top-level part of diffusers' UNet, from its own forward pass: input and
    output shapes, the skips a down block returns and the skips an up block is handed
    (in the order it pops them)."""
    seen, handles = {}, []

    def pre_hook(name):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            # diffusers pops these from the end
            handed = kwargs.get("res_hidden_states_tuple", ())
            seen[name] = {
                "input": tuple(hidden.shape),
                "popped": tuple(tuple(s.shape) for s in reversed(handed)),
            }

        return hook

    def post_hook(name):
        def hook(module, args, kwargs, out):
            returned = ()
            if isinstance(out, tuple):  # a down block: (hidden_states, res_samples)
                out, returned = out
            seen[name]["output"] = tuple(out.shape)
            seen[name]["pushed"] = tuple(tuple(s.shape) for s in returned)

        return hook

    for name in PARTS:
        module = reference.get_submodule(name)
        handles.append(
            module.register_forward_pre_hook(pre_hook(name), with_kwargs=True)
        )
        handles.append(module.register_forward_hook(post_hook(name), with_kwargs=True))
    with torch.no_grad():
        reference(x, t, context)
    for handle in handles:
        handle.remove()
    return seen


def assert_same_trace(calls, expected: dict[str, dict]) -> None:
    # every part, once, in the order diffusers runs them
    assert [c.name for c in calls] == PARTS
    for c in calls:
        found = {
            "input": c.input,
            "output": c.output,
            "pushed": c.skips_saved,
            "popped": c.skips_read,
        }
        assert found == expected[c.name], c.name


@pytest.mark.parametrize("name", sorted(TINY_UNET_CONFIGS))
def test_param_rows_match_diffusers_parts(name):
    """Parameters per part, in ResNets, in transformers and in all, are those of
    diffusers' UNet."""
    cfg = TINY_UNET_CONFIGS[name]
    reference = diffusers_parts(diffusers_unet(cfg))
    rows = param_rows(UNet(cfg))
    assert [r.part for r in rows] == PARTS
    for r in rows:
        assert (r.resnets, r.transformers, r.total) == reference[r.part], r.part


def test_sd15_parameters_on_the_meta_device():
    """On the meta device, SD 1.5's UNet has its published 859,520,964 parameters, split
    as diffusers'."""
    unet, *_ = meta_unet(UNetConfig(), latent_size=64, n_tokens=77)
    assert all(p.device.type == "meta" for p in unet.parameters())
    assert n_params(unet) == SD15_PARAMETERS
    rows = param_rows(unet)
    # the parts cover the whole UNet
    assert sum(r.total for r in rows) == SD15_PARAMETERS
    with torch.device("meta"):
        reference = UNet2DConditionModel.from_config(
            diffusers_unet_config(UNetConfig())
        )
    expected = diffusers_parts(reference)
    assert {r.part: (r.resnets, r.transformers, r.total) for r in rows} == expected


@pytest.mark.parametrize("name", sorted(TINY_UNET_CONFIGS))
def test_traced_shapes_match_diffusers_blocks(name):
    """A tiny config at an odd latent size (the up path must upsample to the skips'
    sizes), real tensors for diffusers, the meta device for minsd."""
    cfg = TINY_UNET_CONFIGS[name]
    x, t, context = (
        torch.randn(2, 4, 17, 13),
        torch.tensor([999.0, 10.5]),
        torch.randn(2, 7, cfg.cross_attention_dim),
    )
    expected = diffusers_shapes(diffusers_unet(cfg), x, t, context)
    unet, *inputs = meta_unet(cfg, latent_size=(17, 13), n_tokens=7, batch=2)
    assert_same_trace(trace_shapes(unet, *inputs), expected)


def test_sd15_trace_matches_diffusers_and_has_12_skips():
    """SD 1.5's traced shapes are diffusers'; its 12 skips are read back last-saved
    first."""
    cfg = UNetConfig()
    unet, *inputs = meta_unet(cfg, latent_size=64, n_tokens=77)
    calls = trace_shapes(unet, *inputs)
    with torch.device("meta"):
        reference = UNet2DConditionModel.from_config(diffusers_unet_config(cfg))
    assert_same_trace(calls, diffusers_shapes(reference, *inputs))
    by_name = {c.name: c for c in calls}
    # conv_in's output first
    pushed = [by_name["conv_in"].output] + [s for c in calls for s in c.skips_saved]
    popped = [s for c in calls for s in c.skips_read]
    assert len(pushed) == len(popped) == 12
    assert popped == pushed[::-1]  # a stack: the last skip saved is the first read
    assert by_name["conv_out"].output == (1, 4, 64, 64)


def test_nested_hooks_pair_each_call_with_its_own_output():
    """The outer block is called first and returns last: its row must still get its own
    output."""
    cfg = TINY_UNET_CONFIGS["tiny-b"]  # 16 channels at the top, 1 layer per block
    unet, *inputs = meta_unet(cfg, latent_size=8, n_tokens=5)
    block = unet.down_blocks[0]
    modules = [
        ("down_blocks.0", block),
        ("down_blocks.0.resnets.0", block.resnets[0]),
        ("down_blocks.0.downsamplers.0", block.downsamplers[0]),
    ]
    calls = trace_shapes(unet, *inputs, modules)
    assert [c.name for c in calls] == [name for name, _ in modules]
    # the block ends with its downsampler
    assert calls[0].output == calls[2].output == (1, 16, 4, 4)
    assert calls[1].output == (1, 16, 8, 8)
    assert (
        calls[0].skips_saved == ((1, 16, 8, 8), (1, 16, 4, 4))
        and calls[1].skips_saved == ()
    )


def test_tables_are_markdown_with_one_row_per_part():
    """The shape and parameter tables are Markdown, one row per top-level part of
    diffusers' UNet (and a total)."""
    unet, *inputs = meta_unet(TINY_UNET_CONFIGS["tiny-a"], latent_size=8, n_tokens=5)
    for table, n_rows in [
        (shape_table(trace_shapes(unet, *inputs)), len(PARTS)),
        (param_table(param_rows(unet)), len(PARTS) + 1),
    ]:
        lines = table.splitlines()
        assert lines[0].startswith("| part |") and set(lines[1]) <= set("|-:")
        assert len(lines) == 2 + n_rows
    assert f"**{n_params(unet):,}**" in param_table(param_rows(unet))
