"""GLIDE's text transformer blocks (SPEC §2).

Pre-LN residual blocks with unmasked attention: every position attends to all `text_ctx`
positions, padding included. The embeddings and the projection live on the U-Net module itself,
because the official checkpoints store them there (`token_embedding`, `positional_embedding`, …).
"""

from __future__ import annotations

from torch import Tensor, nn

from .layers import LayerNorm32, attention


class TextAttention(nn.Module):
    def __init__(self, *, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, t, w = x.shape
        d = w // self.heads
        # Columns are grouped by head, then [q | k | v] inside each head (SPEC §2.2).
        qkv = self.c_qkv(x).view(b, t, self.heads, 3 * d).transpose(1, 2)  # [B, H, T, 3d]
        q, k, v = qkv.split(d, dim=-1)
        a = attention(q, k, v)  # [B, H, T, d]
        return self.c_proj(a.transpose(1, 2).reshape(b, t, w))


class TextMLP(nn.Module):
    def __init__(self, *, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = nn.GELU()  # exact (erf) GELU
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, *, width: int, heads: int) -> None:
        super().__init__()
        # Registration order sets the state_dict order: attn, ln_1, mlp, ln_2 (SPEC §2.1).
        self.attn = TextAttention(width=width, heads=heads)
        self.ln_1 = LayerNorm32(width, eps=1e-5)
        self.mlp = TextMLP(width=width)
        self.ln_2 = LayerNorm32(width, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, *, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(
            *(ResidualAttentionBlock(width=width, heads=heads) for _ in range(layers))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.resblocks(x)
