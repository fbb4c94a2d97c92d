"""Leaf layers of the GLIDE U-Net: norms, timestep embedding, ResBlock, AttentionBlock.

Attribute names and submodule indices equal the official checkpoint keys (SPEC §3), so
`load_state_dict` needs no renaming. Norms compute in float32 and cast back, which is what keeps the
fp16 mode (SPEC §3.7) numerically identical to the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GROUPS = 32


def _at_least_fp32(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32 groups) computed in (at least) float32, cast back, then an optional SiLU."""

    def __init__(self, channels: int, *, silu: bool = False) -> None:
        super().__init__(GROUPS, channels, eps=1e-5)
        self.silu = silu

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(_at_least_fp32(x)).to(x.dtype)
        return F.silu(y) if self.silu else y


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in (at least) float32 and cast back to the input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_at_least_fp32(x)).to(x.dtype)


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Unmasked softmax attention over [B, heads, T, d] tensors, scaled by 1/sqrt(d).

    The reference scales q and k by d^-1/4 each and runs the softmax in float32; the fused kernel
    gives the same result to float rounding (and keeps float32 accumulation in half precision).
    """
    return F.scaled_dot_product_attention(q, k, v)


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [cos | sin] of (original-scale) timesteps: [B] -> [B, dim] float32."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep(+text) embedding, optionally resampling 2x."""

    def __init__(
        self,
        *,
        channels: int,
        out_channels: int,
        emb_channels: int,
        dropout: float,
        use_scale_shift_norm: bool,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.up, self.down = up, down
        self.in_layers = nn.Sequential(
            GroupNorm32(channels, silu=True),
            nn.Identity(),
            nn.Conv2d(channels, out_channels, 3, padding=1),
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels),
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            # Nearest 2x as one broadcasting copy: F.interpolate's values, several times faster on CPU.
            b, c, height, width = x.shape
            doubled = x[:, :, :, None, :, None].expand(b, c, height, 2, width, 2)
            return doubled.reshape(b, c, 2 * height, 2 * width)
        if self.down:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.up or self.down:
            # Resample between the norm+SiLU and the conv, and resample the skip input the same way.
            h = self._resample(self.in_layers[0](x))
            x = self._resample(x)
            h = self.in_layers[2](h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]  # [B, 2*out or out, 1, 1]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = torch.addcmul(shift, self.out_layers[0](h), 1 + scale)  # norm(h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over pixels, with the text encoder's tokens as extra keys and values."""

    def __init__(self, *, channels: int, num_heads: int, encoder_channels: int, text_index: int) -> None:
        super().__init__()
        assert channels % num_heads == 0, (channels, num_heads)
        self.num_heads = num_heads
        self.text_index = text_index  # which of the text embedding's key/value pairs is this block's
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.encoder_kv = nn.Conv1d(encoder_channels, 2 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def text_keys_values(self, encoder_out: Tensor) -> tuple[Tensor, Tensor]:
        """This block's keys and values of the text tokens [B, xf_width, T]: each [B, H, T, d], contiguous.

        They depend on the text only, so they are computed once per request (`encode_text`).
        """
        b = encoder_out.shape[0]
        d = self.proj_out.in_channels // self.num_heads
        ekv = self.encoder_kv(encoder_out)  # [B, 2C, T], grouped by head, then [k | v] (SPEC §3.4)
        ek, ev = ekv.reshape(b, self.num_heads, 2 * d, -1).transpose(-1, -2).split(d, dim=-1)
        return ek.contiguous(), ev.contiguous()

    def forward(self, x: Tensor, text_kv: tuple[Tensor, Tensor]) -> Tensor:
        b, c, height, width = x.shape
        heads, d = self.num_heads, c // self.num_heads
        # The 1x1 convs run as matmuls over pixel rows [B, N, C], so that each head's q, k and v are
        # row slices whose last dimension is contiguous, as the fused attention kernel needs (strided
        # ones fall back to a generic path several times slower on CPU).
        h = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # [B, N, C]
        qkv = F.linear(h, self.qkv.weight[..., 0], self.qkv.bias)  # [B, N, 3C]
        # Channels are grouped by head first, then [q | k | v] inside each head (SPEC §3.4).
        q, k, v = qkv.view(b, -1, heads, 3 * d).transpose(1, 2).split(d, dim=-1)  # each [B, H, N, d]
        ek, ev = text_kv
        k = torch.cat([ek, k], dim=-2)  # text tokens first: [B, H, T + N, d]
        v = torch.cat([ev, v], dim=-2)
        a = attention(q, k, v).transpose(1, 2).reshape(b, -1, c)  # head index major: [B, N, C]
        out = F.linear(a, self.proj_out.weight[..., 0], self.proj_out.bias)  # [B, N, C]
        return (x.reshape(b, c, -1) + out.transpose(1, 2)).reshape(b, c, height, width)


class TimestepBlock(nn.Sequential):
    """A U-Net block: feeds the embedding to ResBlocks and their text keys/values to AttentionBlocks."""

    def forward(  # type: ignore[override]
        self, h: Tensor, emb: Tensor, text_kv: Sequence[tuple[Tensor, Tensor]]
    ) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, AttentionBlock):
                h = layer(h, text_kv[layer.text_index])
            else:
                h = layer(h)
        return h
