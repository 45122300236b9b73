"""A small U-Net for images [batch, C, H, W] (after DDPM's architecture, Ho et al. 2020, App. B).

Residual blocks with GroupNorm and SiLU receive the time embedding through a per-block
linear map; the encoder halves the resolution between levels with strided convolutions,
the decoder upsamples (nearest neighbour, to the exact size of the matching skip, so odd
sizes such as 7x7 work) and concatenates the encoder's activations. An optional
self-attention block sits at the lowest resolution. Sized for 8x8 and 28x28 images on a CPU.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_int, is_real_number
from ._common import check_inputs, class_term
from .embedding import ClassEmbedding, SinusoidalEmbedding


def _groups(channels: int, groups: int) -> int:
    """The largest number of GroupNorm groups <= ``groups`` that divides ``channels``."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class ResBlock(nn.Module):
    """x -> conv(SiLU(GN(x))) + P temb -> conv(dropout(SiLU(GN(.)))) + skip(x)."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch, groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(temb_dim, out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch, groups), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch, groups), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, hgt * wid).unbind(1)
        w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=-1)
        h = torch.einsum("bij,bcj->bci", w, v).reshape(b, c, hgt, wid)
        return x + self.proj(h)


class UNet(nn.Module):
    """Noise / score network for images: ``UNet(C)(x [b, C, H, W], t_in [b]) -> [b, C, H, W]``.

    Args:
        in_channels: image channels C.
        base_channels: channels at the first level.
        channel_mults: per-level channel multipliers; there are len(channel_mults) levels
            and len - 1 downsamplings (e.g. (1, 2) for 8x8 -> 4x4, (1, 2, 2) for 28 -> 14 -> 7).
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
        time_dim: size of the time embedding (default 4 * base_channels).
        attention: add a self-attention block at the lowest resolution.
        dropout: dropout rate inside the residual blocks.
        groups: GroupNorm groups (reduced where they do not divide the channels).
        out_channels: output channels (default in_channels).
        max_period: the sinusoidal embedding's longest period / (2 pi).
        num_classes: make the network class-conditional, ``forward(x, t_in, cond)``: a
            learned :class:`ClassEmbedding` (null token for cond -1 or None) is added to
            the time embedding. None (default): unconditional.
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 32,
                 channel_mults: Sequence[int] = (1, 2), num_res_blocks: int = 1,
                 time_dim: Optional[int] = None, attention: bool = False,
                 dropout: float = 0.0, groups: int = 8, out_channels: Optional[int] = None,
                 max_period: float = 10000.0, num_classes: Optional[int] = None):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.base_channels = check_int("base_channels", base_channels, minimum=2)
        if (isinstance(channel_mults, (str, bytes)) or not isinstance(channel_mults, Sequence)
                or len(channel_mults) < 1):
            raise ValueError(f"channel_mults must be a non-empty sequence of positive "
                             f"integers, got {channel_mults!r}")
        self.channel_mults = tuple(check_int("channel_mults[i]", m)
                                   for m in channel_mults)
        self.num_res_blocks = check_int("num_res_blocks", num_res_blocks)
        self.time_dim = check_int("time_dim", 4 * base_channels
                                           if time_dim is None else time_dim)
        self.attention = bool(attention)
        if not (is_real_number(dropout) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.groups = check_int("groups", groups)
        self.out_channels = check_int("out_channels", in_channels
                                               if out_channels is None else out_channels)
        self.max_period = float(max_period)

        base, td = self.base_channels, self.time_dim
        self.embed = SinusoidalEmbedding(base, max_period)
        self.time_mlp = nn.Sequential(nn.Linear(base, td), nn.SiLU(), nn.Linear(td, td))
        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes)
        self.class_embed = None if num_classes is None else ClassEmbedding(num_classes, td)


        def block(in_ch: int, out_ch: int) -> ResBlock:
            return ResBlock(in_ch, out_ch, td, self.groups, self.dropout)

        skip_channels = [base]
        ch = base
        self.down = nn.ModuleList()
        for level, mult in enumerate(self.channel_mults):
            stage = nn.ModuleList()
            for _ in range(num_res_blocks):
                stage.append(block(ch, base * mult))
                ch = base * mult
                skip_channels.append(ch)
            down = (nn.Conv2d(ch, ch, 3, stride=2, padding=1)
                    if level < len(self.channel_mults) - 1 else nn.Identity())
            if level < len(self.channel_mults) - 1:
                skip_channels.append(ch)
            self.down.append(nn.ModuleDict({"blocks": stage, "downsample": down}))

        self.mid1 = block(ch, ch)
        self.mid_attn = AttentionBlock(ch, self.groups) if self.attention else nn.Identity()
        self.mid2 = block(ch, ch)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(self.channel_mults))):
            stage = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                stage.append(block(ch + skip_channels.pop(), base * mult))
                ch = base * mult
            up = nn.Conv2d(ch, ch, 3, padding=1) if level > 0 else nn.Identity()
            self.up.append(nn.ModuleDict({"blocks": stage, "upsample": up}))

        self.norm_out = nn.GroupNorm(_groups(ch, self.groups), ch)
        self.conv_out = nn.Conv2d(ch, self.out_channels, 3, padding=1)

    def config(self) -> dict:
        """The constructor arguments (stored in checkpoints to rebuild the network)."""
        return {"in_channels": self.in_channels, "base_channels": self.base_channels,
                "channel_mults": list(self.channel_mults),
                "num_res_blocks": self.num_res_blocks, "time_dim": self.time_dim,
                "attention": self.attention, "dropout": self.dropout, "groups": self.groups,
                "out_channels": self.out_channels, "max_period": self.max_period,
                "num_classes": self.num_classes}

    def forward(self, x: Tensor, t_in: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        t_in = check_inputs(x, t_in, ("batch", self.in_channels, "H", "W"))
        temb = self.time_mlp(self.embed(t_in, dtype=self.conv_in.weight.dtype))
        temb = temb + class_term(self.class_embed, cond, x.shape[0], "UNet")

        h = self.conv_in(x)
        skips = [h]
        for level, stage in enumerate(self.down):
            for blk in stage["blocks"]:
                h = blk(h, temb)
                skips.append(h)
            if level < len(self.down) - 1:
                h = stage["downsample"](h)
                skips.append(h)

        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)

        for i, stage in enumerate(self.up):
            for blk in stage["blocks"]:
                h = blk(torch.cat([h, skips.pop()], dim=1), temb)
            if i < len(self.up) - 1:
                # upsample to the size of the next skip (handles odd sizes like 7 -> 14)
                h = stage["upsample"](F.interpolate(h, size=skips[-1].shape[-2:],
                                                    mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
