"""The Stable Diffusion 1.5 UNet, written to be read top to bottom.

The network F_theta(x, t, context) predicts the noise eps in a noisy latent x at
timestep t, conditioned on CLIP text embeddings (the context). Small pieces come first
(time embedding, ResNet block, attention, transformer block), the full UNet last.

Module and attribute names copy diffusers' `UNet2DConditionModel`, so a diffusers SD 1.5
state dict loads with `load_state_dict(..., strict=True)` and no key renaming. Where
diffusers keeps a parameter-free module inside a container (`to_out.1`, `ff.net.1` are
dropouts), we keep an `nn.Dropout` too, so the indices of the modules around it stay.

Descended from cloneofsimo/minSDXL, reduced to SD 1.5.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of an SD 1.5-shaped UNet. Defaults: SD 1.5's (859,520,964 in all)."""

    sample_size: int = 64  # latent size at training time (64 x 8 = 512 px for SD 1.5)
    in_channels: int = 4  # latent channels of the VAE
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)  # channels per level
    layers_per_block: int = 2  # ResNet (+ attention) layers per down block; up: +1
    num_heads: int = 8  # diffusers' `attention_head_dim`, a historical misnomer
    cross_attention_dim: int = 768  # width of the text embeddings (CLIP ViT-L/14)
    norm_num_groups: int = 32

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]


# --------------------------------------------------------------------------------------
# Time embedding


def timestep_embedding(
    t: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, cosines first.

    t: (B,) -> (B, dim).
    """
    half = dim // 2
    steps = torch.arange(half, device=t.device)  # (half,)
    freqs = torch.exp(-math.log(max_period) * steps / half)  # (half,)
    angles = t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, dim)


class TimestepEmbedding(nn.Module):
    """An MLP that lifts the sinusoidal embedding to the width the ResNets read."""

    def __init__(self, in_dim: int, time_embed_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, t_emb: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(t_emb)))


# --------------------------------------------------------------------------------------
# ResNet block, down- and upsampling


class ResnetBlock2D(nn.Module):
    """GroupNorm, SiLU, conv; + time embedding; GroupNorm, SiLU, conv; + skip."""

    def __init__(
        self, in_channels: int, out_channels: int, time_embed_dim: int, groups: int
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(time_embed_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nonlinearity = nn.SiLU()
        # A 1x1 conv matches the skip path's channels, only where they change.
        self.conv_shortcut = None
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(x)))  # (B, C_out, H, W)
        time = self.time_emb_proj(self.nonlinearity(emb))  # (B, C_out): per channel
        h = h + time[:, :, None, None]
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class Downsample2D(nn.Module):
    """A stride-2 3x3 convolution: halves H and W (rounding up)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour upsampling to the matching skip's size, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        # `size` is 2x the input's, except after an odd size on the way down (9 -> 17).
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


# --------------------------------------------------------------------------------------
# Attention


class Attention(nn.Module):
    """Multi-head attention: self-attention if context is None, else cross-attention."""

    def __init__(
        self, dim: int, num_heads: int, context_dim: int | None = None
    ) -> None:
        super().__init__()
        context_dim = context_dim or dim
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        # None, or a function handed the attention probabilities at every call
        # (attention_maps.py sets it).
        self.on_probs: Callable[[torch.Tensor], None] | None = None

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        context = x if context is None else context
        B, N, C = x.shape  # N = H * W positions
        M, nh = context.shape[1], self.num_heads  # M: positions or tokens attended to
        q = self.to_q(x).view(B, N, nh, -1).transpose(1, 2)  # (B, nh, N, hs)
        k = self.to_k(context).view(B, M, nh, -1).transpose(1, 2)  # (B, nh, M, hs)
        v = self.to_v(context).view(B, M, nh, -1).transpose(1, 2)  # (B, nh, M, hs)
        if self.on_probs is None:
            # softmax(q k^T / sqrt(hs)) v: (B, nh, N, hs)
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # the same, written out, to hand over the probabilities
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, nh, N, M)
            probs = torch.softmax(scores, dim=-1)
            self.on_probs(probs)
            out = probs @ v  # (B, nh, N, hs)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.to_out[0](out)


class GEGLU(nn.Module):
    """A linear layer to twice the width; one half gates the other through GELU."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList(
            [GEGLU(dim, mult * dim), nn.Dropout(0.0), nn.Linear(mult * dim, dim)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    """Pre-norm transformer layer: self-attention, cross-attention on the text, MLP."""

    def __init__(self, dim: int, num_heads: int, context_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, num_heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))  # each position looks at every other one
        x = x + self.attn2(self.norm2(x), context)  # and at the prompt's tokens
        x = x + self.ff(self.norm3(x))
        return x


class Transformer2DModel(nn.Module):
    """A transformer block over the H*W positions of a feature map, with a residual."""

    def __init__(
        self, channels: int, num_heads: int, context_dim: int, groups: int
    ) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, num_heads, context_dim)]
        )
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x))  # (B, C, H, W)
        h = h.permute(0, 2, 3, 1).reshape(B, H * W, C)  # (B, HW, C): a token a position
        h = self.transformer_blocks[0](h, context)
        h = h.reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W)
        return x + self.proj_out(h)


# --------------------------------------------------------------------------------------
# The blocks of the down path, the middle and the up path


class CrossAttnDownBlock2D(nn.Module):
    """(ResNet -> Transformer) x layers, then downsample. Returns x and its skips."""

    def __init__(
        self, in_ch: int, out_ch: int, cfg: UNetConfig, add_downsample: bool
    ) -> None:
        super().__init__()
        groups, emb = cfg.norm_num_groups, cfg.time_embed_dim
        n = cfg.layers_per_block
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, emb, groups)
                for i in range(n)
            ]
        )
        self.attentions = nn.ModuleList(
            [
                Transformer2DModel(
                    out_ch, cfg.num_heads, cfg.cross_attention_dim, groups
                )
                for _ in range(n)
            ]
        )
        self.downsamplers = (
            nn.ModuleList([Downsample2D(out_ch)]) if add_downsample else None
        )

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        skips = ()
        for resnet, attention in zip(self.resnets, self.attentions):
            x = attention(resnet(x, emb), context)
            skips += (x,)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)  # (B, C, ceil(H/2), ceil(W/2))
            skips += (x,)
        return x, skips


class DownBlock2D(nn.Module):
    """ResNet x layers, at the lowest resolution: no attention, no downsampling."""

    def __init__(self, in_ch: int, out_ch: int, cfg: UNetConfig) -> None:
        super().__init__()
        n = cfg.layers_per_block
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(
                    in_ch if i == 0 else out_ch,
                    out_ch,
                    cfg.time_embed_dim,
                    cfg.norm_num_groups,
                )
                for i in range(n)
            ]
        )

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        skips = ()  # no attention at this level: the context is not read
        for resnet in self.resnets:
            x = resnet(x, emb)
            skips += (x,)
        return x, skips


class UNetMidBlock2DCrossAttn(nn.Module):
    """ResNet -> Transformer -> ResNet at the lowest resolution."""

    def __init__(self, channels: int, cfg: UNetConfig) -> None:
        super().__init__()
        emb, groups = cfg.time_embed_dim, cfg.norm_num_groups
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(channels, channels, emb, groups) for _ in range(2)]
        )
        self.attentions = nn.ModuleList(
            [
                Transformer2DModel(
                    channels, cfg.num_heads, cfg.cross_attention_dim, groups
                )
            ]
        )

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        x = self.resnets[0](x, emb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, emb)


def up_resnets(
    prev_ch: int, out_ch: int, skip_ch: int, cfg: UNetConfig
) -> nn.ModuleList:
    """The ResNets of an up block. Each reads its input concatenated with one skip; the
    last skip of a level comes from the level above (skip_ch), the others from this
    level (out_ch)."""
    n = cfg.layers_per_block + 1
    resnets = []
    for i in range(n):
        in_ch = prev_ch if i == 0 else out_ch
        skip = skip_ch if i == n - 1 else out_ch
        resnets.append(
            ResnetBlock2D(in_ch + skip, out_ch, cfg.time_embed_dim, cfg.norm_num_groups)
        )
    return nn.ModuleList(resnets)


class UpBlock2D(nn.Module):
    """At the lowest resolution: (concat skip -> ResNet) x (layers + 1), then
    upsample (unless this level is also the top one)."""

    def __init__(
        self,
        prev_ch: int,
        out_ch: int,
        skip_ch: int,
        cfg: UNetConfig,
        add_upsample: bool,
    ) -> None:
        super().__init__()
        self.resnets = up_resnets(prev_ch, out_ch, skip_ch, cfg)
        self.upsamplers = nn.ModuleList([Upsample2D(out_ch)]) if add_upsample else None

    def forward(
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        upsample_size: torch.Size | None,
    ) -> torch.Tensor:
        """skips: this level's, in the order the down path saved them; the ResNets
        read them newest first. No attention here: the context is not read."""
        for resnet, skip in zip(self.resnets, reversed(skips)):
            x = resnet(torch.cat([x, skip], dim=1), emb)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, size=upsample_size)
        return x


class CrossAttnUpBlock2D(nn.Module):
    """(concat skip -> ResNet -> Transformer) x (layers + 1), then upsample (not at
    the top level)."""

    def __init__(
        self,
        prev_ch: int,
        out_ch: int,
        skip_ch: int,
        cfg: UNetConfig,
        add_upsample: bool,
    ) -> None:
        super().__init__()
        groups = cfg.norm_num_groups
        self.resnets = up_resnets(prev_ch, out_ch, skip_ch, cfg)
        self.attentions = nn.ModuleList(
            [
                Transformer2DModel(
                    out_ch, cfg.num_heads, cfg.cross_attention_dim, groups
                )
                for _ in range(cfg.layers_per_block + 1)
            ]
        )
        self.upsamplers = nn.ModuleList([Upsample2D(out_ch)]) if add_upsample else None

    def forward(
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        upsample_size: torch.Size | None,
    ) -> torch.Tensor:
        """skips: this level's, in the order the down path saved them; the ResNets
        read them newest first. upsample_size: the next level's (h, w), or None at the
        top level, which does not upsample."""
        for resnet, attention, skip in zip(
            self.resnets, self.attentions, reversed(skips)
        ):
            x = resnet(torch.cat([x, skip], dim=1), emb)
            x = attention(x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, size=upsample_size)
        return x


# --------------------------------------------------------------------------------------
# The UNet


class UNet(nn.Module):
    """F_theta(x, t, context) -> eps for SD 1.5-shaped configs.

    Down path: conv_in, then per level (ResNet [-> attention]) x layers_per_block and a
    downsample; every intermediate is kept as a skip. Middle: ResNet, attention, ResNet.
    Up path: per level (concat a skip -> ResNet [-> attention]) x (layers_per_block +
    1) and an upsample. SD 1.5, with 4 levels and 2 layers per block, has 12 skips.
    """

    def __init__(self, cfg: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = cfg
        ch = cfg.block_out_channels
        n_levels = len(ch)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], kernel_size=3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], cfg.time_embed_dim)

        # Down: cross-attention and downsampling on every level but the lowest.
        self.down_blocks = nn.ModuleList()
        for level in range(n_levels):
            in_ch = ch[max(level - 1, 0)]
            if level < n_levels - 1:
                self.down_blocks.append(
                    CrossAttnDownBlock2D(in_ch, ch[level], cfg, add_downsample=True)
                )
            else:
                self.down_blocks.append(DownBlock2D(in_ch, ch[level], cfg))

        self.mid_block = UNetMidBlock2DCrossAttn(ch[-1], cfg)

        # Up: the mirror image, lowest level first.
        rev = list(reversed(ch))
        self.up_blocks = nn.ModuleList()
        for level in range(n_levels):
            prev_ch, out_ch = rev[max(level - 1, 0)], rev[level]
            skip_ch = rev[min(level + 1, n_levels - 1)]  # the level above's last skip
            add_upsample = level < n_levels - 1  # all but the top level
            if level == 0:
                block = UpBlock2D(prev_ch, out_ch, skip_ch, cfg, add_upsample)
            else:
                block = CrossAttnUpBlock2D(prev_ch, out_ch, skip_ch, cfg, add_upsample)
            self.up_blocks.append(block)

        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, ch[0], eps=1e-5)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, kernel_size=3, padding=1)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """F_theta: latents x (B, C_lat, h, w), timesteps t (B,) or (), text context
        (B, T, D) -> eps, like x.

        SD 1.5: C_lat = 4, T = 77, D = 768. Below, C0..C3 are block_out_channels
        (SD 1.5: 320, 640, 1280, 1280) and E = 4 C0 is the time embedding's width.
        """
        t = t.expand(x.shape[0])  # one timestep per sample
        t_emb = timestep_embedding(t, self.config.block_out_channels[0])  # (B, C0)
        t_emb = t_emb.to(x.dtype)
        emb = self.time_embedding(t_emb)  # (B, E)

        # Down path: every intermediate is kept as a skip, at its level's resolution.
        x = self.conv_in(x)  # (B, C0, h, w)
        skips = (x,)
        for block in self.down_blocks:
            x, block_skips = block(x, emb, context)
            skips += block_skips
        # SD 1.5: 12 skips, 3 a level; (h, w) halves after each of the first 3 levels.

        x = self.mid_block(x, emb, context)  # (B, C3, h/8, w/8)

        # Up path: each block takes the newest len(block.resnets) skips, one per
        # ResNet, and upsamples to the size of the skips that remain for the next
        # level (rounded as on the way down).
        for block in self.up_blocks:
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            upsample_size = skips[-1].shape[-2:] if skips else None  # None: the top
            x = block(x, emb, context, block_skips, upsample_size)

        return self.conv_out(self.conv_act(self.conv_norm_out(x)))  # (B, C_lat, h, w)
