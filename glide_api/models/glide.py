"""The GLIDE network: text encoder + U-Net, in all four official variants (SPEC §1–4).

One class covers base, upsample, base-inpaint and upsample-inpaint; the config's `super_res` and
`inpaint` flags decide which extra inputs are concatenated to `x` (SPEC §4). The module's attribute
names are the official state_dict keys, so official checkpoints load strictly with no renaming.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import checks
from ..errors import InvalidParameter, StateDictMismatch
from ..model_selection import PRECISIONS
from .config import ModelConfig
from .layers import (
    AttentionBlock,
    GroupNorm32,
    LayerNorm32,
    ResBlock,
    TimestepBlock,
    timestep_embedding,
)
from .text import Transformer

Precision = Literal[PRECISIONS]


@dataclass(frozen=True)
class TextEmbedding:
    """The text encoder's outputs for a batch of prompts; computed once, reused at every step."""

    proj: Tensor  # [B, 4*ch0], in the timestep embedding's dtype: added to it
    tokens: Tensor  # [B, xf_width, text_ctx]: the token states the attention blocks attend to
    # Per attention block (its `text_index`): the tokens' keys and values, each [B, H, text_ctx, d].
    kv: tuple[tuple[Tensor, Tensor], ...]

    def __len__(self) -> int:
        return self.proj.shape[0]

    def rows(self, index: Tensor | list[int] | slice) -> TextEmbedding:
        """The embedding of the prompts at `index` (rows of the batch)."""
        return TextEmbedding(
            proj=self.proj[index],
            tokens=self.tokens[index],
            kv=tuple((k[index], v[index]) for k, v in self.kv),
        )


class GlideUNet(nn.Module):
    """GLIDE's text-conditional U-Net. `forward` returns [B, 6, H, W]: ε (3) and the variance value v (3)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        ch0, emb_dim, width = c.num_channels, c.time_embed_dim, c.xf_width

        # Text encoder parameters, at the top level as in the official checkpoints (SPEC §2.1).
        # Bare parameters come first in the state_dict whatever the registration order.
        self.positional_embedding = nn.Parameter(torch.empty(c.text_ctx, width))
        if c.xf_padding:
            self.padding_embedding = nn.Parameter(torch.empty(c.text_ctx, width))

        self.time_embed = nn.Sequential(nn.Linear(ch0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self._build_unet()
        self.out = nn.Sequential(GroupNorm32(ch0, silu=True), nn.Identity(), nn.Conv2d(ch0, 6, 3, padding=1))
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

        self.transformer = Transformer(width=width, layers=c.xf_layers, heads=c.xf_heads)
        if c.xf_final_ln:
            self.final_ln = LayerNorm32(width, eps=1e-5)
        self.token_embedding = nn.Embedding(c.n_vocab, width)
        self.transformer_proj = nn.Linear(width, emb_dim)

        std = width**-0.5
        nn.init.normal_(self.positional_embedding, std=std)
        if c.xf_padding:
            nn.init.normal_(self.padding_embedding, std=std)

    def _build_unet(self) -> None:
        """Encoder, middle and decoder block lists (SPEC §3.5)."""
        c = self.config
        ch0, emb_dim, mults = c.num_channels, c.time_embed_dim, c.channel_mults
        attn_ds = c.attention_downsample_factors

        def res(ch_in: int, ch_out: int, **resample: bool) -> ResBlock:
            return ResBlock(
                channels=ch_in,
                out_channels=ch_out,
                emb_channels=emb_dim,
                dropout=c.dropout,
                use_scale_shift_norm=c.use_scale_shift_norm,
                **resample,
            )

        attention_blocks: list[AttentionBlock] = []

        def attn(ch: int, heads_option: int) -> AttentionBlock:
            heads = ch // c.num_head_channels if c.num_head_channels > 0 else heads_option
            block = AttentionBlock(
                channels=ch, num_heads=heads, encoder_channels=c.xf_width, text_index=len(attention_blocks)
            )
            attention_blocks.append(block)
            return block

        up_heads = c.num_heads if c.num_heads_upsample == -1 else c.num_heads_upsample
        ch = ch0 * mults[0]
        self.input_blocks = nn.ModuleList([TimestepBlock(nn.Conv2d(c.in_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        ds = 1
        for level, mult in enumerate(mults):
            for _ in range(c.num_res_blocks):
                layers: list[nn.Module] = [res(ch, ch0 * mult)]
                ch = ch0 * mult
                if ds in attn_ds:
                    layers.append(attn(ch, c.num_heads))
                self.input_blocks.append(TimestepBlock(*layers))
                skip_channels.append(ch)
            if level != len(mults) - 1:
                self.input_blocks.append(TimestepBlock(res(ch, ch, down=True)))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = TimestepBlock(res(ch, ch), attn(ch, c.num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for i in range(c.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), ch0 * mult)]
                ch = ch0 * mult
                if ds in attn_ds:
                    layers.append(attn(ch, up_heads))
                if level and i == c.num_res_blocks:
                    layers.append(res(ch, ch, up=True))
                    ds //= 2
                self.output_blocks.append(TimestepBlock(*layers))
        # A plain tuple, not a ModuleList: the blocks are registered (and named) where they sit.
        self._attention_blocks = tuple(attention_blocks)

    # ---- precision ----------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the U-Net torso and transformer (float16 after `convert_to_fp16`)."""
        return self.input_blocks[0][0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.time_embed[0].weight.device

    def _half_precision_modules(self) -> Iterator[nn.Module]:
        """What the reference's fp16 mode stores in half precision (SPEC §3.7)."""
        for block in (self.input_blocks, self.middle_block, self.output_blocks):
            yield from (m for m in block.modules() if isinstance(m, nn.Conv1d | nn.Conv2d))
        yield from (m for m in self.transformer.modules() if isinstance(m, nn.Linear))
        yield self.transformer_proj
        yield self.token_embedding

    def convert_torso(self, dtype: torch.dtype) -> GlideUNet:
        """Store the torso convs and text Linears in `dtype`; norms, embeddings and the head stay fp32.

        With float16 this is the reference's mixed precision; bfloat16 follows the same rule. The
        weights are converted here once: a forward casts activations only.
        """
        for m in self._half_precision_modules():
            m.to(dtype)
        return self

    def convert_to_fp16(self) -> GlideUNet:
        """The reference's mixed precision: torso convs and text Linears in fp16, norms/embeddings fp32."""
        return self.convert_torso(torch.float16)

    def convert_to_fp32(self) -> GlideUNet:
        return self.convert_torso(torch.float32)

    # ---- loading ------------------------------------------------------------------------------

    def load_state_dict(  # type: ignore[override]
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load official-format weights; with `strict`, any key or shape difference is listed in the error.

        Values are copied into the existing parameter dtypes, so loading after `convert_to_fp16`
        works as in the reference notebooks.
        """
        if strict:
            problems = state_dict_problems(self, state_dict)
            if problems:
                raise StateDictMismatch(
                    f"state_dict does not match the {self.config.kind} model "
                    f"(image_size={self.config.image_size}): " + "; ".join(problems)
                )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ---- forward ------------------------------------------------------------------------------

    def encode_text(self, tokens: Tensor, mask: Tensor | None) -> TextEmbedding:
        """Run the text transformer once: tokens int [B, text_ctx], mask bool [B, text_ctx] (SPEC §2.2)."""
        c = self.config
        if tokens.ndim != 2 or tokens.shape[1] != c.text_ctx:
            raise InvalidParameter(f"tokens must have shape [batch, {c.text_ctx}], got {list(tokens.shape)}")
        if tokens.is_floating_point():
            raise InvalidParameter("tokens must be an integer tensor")
        e = self.token_embedding(tokens.long()) + self.positional_embedding[None]
        if c.xf_padding:
            if mask is None or mask.shape != tokens.shape:
                raise InvalidParameter(f"mask must be a bool tensor of shape {list(tokens.shape)}")
            # A padded position gets only padding_embedding: no token and no positional embedding.
            e = torch.where(mask.bool()[..., None], e, self.padding_embedding[None])
        x = self.transformer(e.to(self.dtype))
        if c.xf_final_ln:
            x = self.final_ln(x)
        proj = self.transformer_proj(x[:, -1])  # from the last position (SPEC §2.2.6)
        tokens = x.permute(0, 2, 1)  # [B, xf_width, text_ctx]
        return TextEmbedding(
            proj=proj.to(self.time_embed[0].weight.dtype),
            tokens=tokens,
            kv=tuple(block.text_keys_values(tokens) for block in self._attention_blocks),
        )

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        tokens: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        text: TextEmbedding | None = None,
        low_res: Tensor | None = None,
        inpaint_image: Tensor | None = None,
        inpaint_mask: Tensor | None = None,
    ) -> Tensor:
        """Predict [B, 6, H, W] (ε and v) for x [B, 3, H, W] at original-scale `timesteps` [B].

        Give either `tokens` (+ `mask`) or a precomputed `text` from `encode_text`.
        """
        c = self.config
        if x.ndim != 4 or x.shape[1] != 3:
            raise InvalidParameter(f"x must have shape [batch, 3, H, W], got {list(x.shape)}")
        batch = x.shape[0]
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(batch)
        if text is None:
            if tokens is None:
                raise InvalidParameter("give tokens (and mask) or a precomputed text embedding")
            text = self.encode_text(tokens, mask)
        if len(text) != batch:
            raise InvalidParameter(f"text batch {len(text)} does not match x batch {batch}")

        t_emb = timestep_embedding(timesteps, c.num_channels)
        emb = self.time_embed(t_emb.to(self.time_embed[0].weight.dtype))
        emb = emb + text.proj
        h = torch.cat([x, *self._extra_inputs(x, low_res, inpaint_image, inpaint_mask)], dim=1)
        h = h.to(self.dtype)

        skips = []
        for block in self.input_blocks:
            h = block(h, emb, text.kv)
            skips.append(h)
        h = self.middle_block(h, emb, text.kv)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, text.kv)
        # The head runs in x's dtype (float32) and the result is x's dtype, also under autocast.
        return self.out(h.to(x.dtype)).to(x.dtype)

    def _extra_inputs(
        self,
        x: Tensor,
        low_res: Tensor | None,
        inpaint_image: Tensor | None,
        inpaint_mask: Tensor | None,
    ) -> list[Tensor]:
        """Channels concatenated after x: (image·mask, mask) for inpainting, then up(low_res) (SPEC §4)."""
        c = self.config
        extra = []
        if c.inpaint:
            if inpaint_image is None:
                inpaint_image = torch.zeros_like(x)
            if inpaint_mask is None:
                inpaint_mask = torch.zeros_like(x[:, :1])
            extra += [inpaint_image * inpaint_mask, inpaint_mask]
        if c.super_res:
            if low_res is None:
                raise InvalidParameter("an upsampler needs low_res [batch, 3, h, w]")
            extra.append(F.interpolate(low_res, size=x.shape[-2:], mode="bilinear", align_corners=False))
        return extra


def state_dict_problems(model: nn.Module, state_dict: Mapping[str, Any]) -> list[str]:
    """Missing, unexpected and mis-shaped keys of `state_dict` against `model`, as readable lines."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    problems = []
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k} {list(got[k])} (expected {list(expected[k])})"
        for k in expected
        if k in got and got[k] != expected[k]
    ]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if keys:
            shown = ", ".join(keys[:20]) + (f", … ({len(keys) - 20} more)" if len(keys) > 20 else "")
            problems.append(f"{len(keys)} {label} key(s): {shown}")
    return problems


def create_model(
    config: str | Mapping[str, Any] | ModelConfig,
    state_dict: Mapping[str, Tensor] | None = None,
) -> GlideUNet:
    """Build a GLIDE network in eval mode, float32, on the CPU.

    `config` is an official name (`base`, `upsample`, `base-inpaint`, `upsample-inpaint`), an
    official option dict (completed from its kind's defaults), or a `ModelConfig`. Without
    `state_dict` the weights are freshly initialised (load them with `load_state_dict`); with one,
    the network is built without initialising and takes those tensors (strictly checked, cast to
    float32), which saves the time and memory of a second copy for full-size models.
    """
    if isinstance(config, str):
        config = ModelConfig.preset(config)
    elif not isinstance(config, ModelConfig):
        config = ModelConfig.from_options(config)
    if state_dict is None:
        return GlideUNet(config).eval()
    with torch.device("meta"):
        model = GlideUNet(config)
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, assign=True)
    return model.eval()


def autocast(precision: Precision, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Training's context: bf16 autocast over float32 master weights for "bf16", nothing otherwise.

    Sampling stores its weights in the precision instead (`convert_torso`, once at loading), so
    that a forward casts no weights.
    """
    checks.one_of("precision", precision, PRECISIONS)
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
