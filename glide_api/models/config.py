"""GLIDE model configuration: the official option names, their defaults, and the four presets.

The option names and defaults are those of the reference `model_and_diffusion_defaults()` (SPEC §1),
so an official option dict (or a model folder's `config.json`) maps one-to-one onto `ModelConfig`.
Defaults live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import checks
from ..errors import InvalidParameter
from ..options import DIFFUSION_STEPS

# Default per-level width multipliers for the image sizes the reference knows (SPEC §1.3).
DEFAULT_CHANNEL_MULT: dict[int, tuple[int, ...]] = {
    64: (1, 2, 3, 4),
    128: (1, 1, 2, 3, 4),
    256: (1, 1, 2, 2, 4, 4),
}
NOISE_SCHEDULES = ("linear", "squaredcos_cap_v2")
GPT2_VOCAB_SIZE = 50257
GROUPNORM_GROUPS = 32


@dataclass(frozen=True)
class ModelConfig:
    """One GLIDE U-Net (with its text encoder) and its diffusion schedule.

    Field names are the reference's option names. `n_vocab` is our one addition: the size of the
    token embedding, 50257 (GPT-2 BPE) for every official checkpoint.
    """

    image_size: int = 64
    num_channels: int = 192
    num_res_blocks: int = 3
    channel_mult: str = ""
    num_heads: int = 1
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    attention_resolutions: str = "32,16,8"
    dropout: float = 0.1
    text_ctx: int = 128
    xf_width: int = 512
    xf_layers: int = 16
    xf_heads: int = 8
    xf_final_ln: bool = True
    xf_padding: bool = True
    diffusion_steps: int = DIFFUSION_STEPS
    noise_schedule: str = "squaredcos_cap_v2"
    timestep_respacing: str = ""
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_fp16: bool = False
    cache_text_emb: bool = False
    inpaint: bool = False
    super_res: bool = False
    n_vocab: int = GPT2_VOCAB_SIZE

    def __post_init__(self) -> None:
        _validate(self)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        """The configuration of an official checkpoint: base, upsample, base-inpaint, upsample-inpaint."""
        try:
            return cls(**PRESETS[name])
        except KeyError:
            raise InvalidParameter(
                f"unknown model name {name!r}; expected one of {', '.join(sorted(PRESETS))}"
            ) from None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ModelConfig:
        """Build from an official option dict; a partial dict is completed from its kind's defaults.

        The kind is read from the dict's own `super_res` and `inpaint` flags (missing means False),
        so `{"super_res": True, "image_size": 128}` gets the upsampler's other defaults.
        """
        if not isinstance(options, Mapping):
            raise InvalidParameter(f"model options must be a mapping, got {type(options).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidParameter(
                f"unknown model option(s) {', '.join(map(repr, unknown))}; "
                f"known options are {', '.join(sorted(known))}"
            )
        kind = preset_name(
            super_res=bool(options.get("super_res", False)), inpaint=bool(options.get("inpaint", False))
        )
        return cls(**{**PRESETS[kind], **options})

    @classmethod
    def from_json_file(cls, path: str | Path) -> ModelConfig:
        with open(path, encoding="utf-8") as f:
            try:
                options = json.load(f)
            except json.JSONDecodeError as e:
                raise InvalidParameter(f"{path}: not valid JSON ({e})") from None
        return cls.from_options(options)

    def to_options(self) -> dict[str, Any]:
        """The official option dict (plus n_vocab), as stored in a model folder's config.json."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # ---- derived values (SPEC §1.3) -----------------------------------------------------------

    @property
    def kind(self) -> str:
        """The preset this configuration is a variant of: base, upsample, base-inpaint, upsample-inpaint."""
        return preset_name(super_res=self.super_res, inpaint=self.inpaint)

    @property
    def channel_mults(self) -> tuple[int, ...]:
        if self.channel_mult == "":
            return DEFAULT_CHANNEL_MULT[self.image_size]
        return tuple(int(m) for m in self.channel_mult.split(","))

    @property
    def attention_downsample_factors(self) -> frozenset[int]:
        """`attention_resolutions` (feature-map sizes) turned into downsample factors."""
        return frozenset(self.image_size // int(r) for r in self.attention_resolutions.split(",") if r)

    @property
    def in_channels(self) -> int:
        """U-Net input channels: x, then inpaint image + mask, then the upsampled low-res (SPEC §4)."""
        return 3 + (4 if self.inpaint else 0) + (3 if self.super_res else 0)

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.num_channels

    @property
    def low_res_size(self) -> int | None:
        """The low-resolution input size an upsampler expects (its image size / 4), else None."""
        return self.image_size // 4 if self.super_res else None


def preset_name(*, super_res: bool, inpaint: bool) -> str:
    return ("upsample" if super_res else "base") + ("-inpaint" if inpaint else "")


_BASE: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
_UPSAMPLE: dict[str, Any] = {
    **_BASE,
    "image_size": 256,
    "num_res_blocks": 2,
    "noise_schedule": "linear",
    "super_res": True,
}
PRESETS: dict[str, dict[str, Any]] = {
    "base": _BASE,
    "upsample": _UPSAMPLE,
    "base-inpaint": {**_BASE, "inpaint": True},
    "upsample-inpaint": {**_UPSAMPLE, "inpaint": True},
}


def _validate(c: ModelConfig) -> None:
    """Reject configurations the network cannot be built from, naming the option at fault."""

    def fail(option: str, rule: str) -> None:
        raise InvalidParameter(f"invalid model option {option}={getattr(c, option)!r}: {rule}")

    for name in (
        "image_size",
        "num_channels",
        "num_res_blocks",
        "text_ctx",
        "xf_width",
        "xf_heads",
        "diffusion_steps",
        "n_vocab",
    ):
        checks.integer(name, getattr(c, name), minimum=1)
    checks.integer("xf_layers", c.xf_layers, minimum=0)
    if not isinstance(c.channel_mult, str):
        fail("channel_mult", 'must be a comma-separated string such as "1,2,3,4", or ""')
    if c.channel_mult == "":
        if c.image_size not in DEFAULT_CHANNEL_MULT:
            fail(
                "image_size",
                f'with channel_mult "" it must be one of '
                f"{sorted(DEFAULT_CHANNEL_MULT)} (or give channel_mult)",
            )
    else:
        try:
            mults = [int(m) for m in c.channel_mult.split(",")]
        except ValueError:
            fail("channel_mult", "must be comma-separated positive integers")
        if any(m <= 0 for m in mults):
            fail("channel_mult", "must be comma-separated positive integers")
        if 2 ** (len(mults) + 2) != c.image_size:
            fail(
                "image_size",
                f"must equal 2**(number of channel_mult levels + 2) = "
                f"{2 ** (len(mults) + 2)} for channel_mult {c.channel_mult!r}",
            )
    try:
        resolutions = [int(r) for r in c.attention_resolutions.split(",") if r]
    except (ValueError, AttributeError):
        fail("attention_resolutions", 'must be comma-separated integers such as "32,16,8"')
    if any(r <= 0 or c.image_size % r for r in resolutions):
        fail("attention_resolutions", f"each must be a positive divisor of image_size {c.image_size}")
    for m in c.channel_mults:
        width = c.num_channels * m
        if width % GROUPNORM_GROUPS:
            fail(
                "num_channels",
                f"every level width (num_channels x channel_mult) must be a "
                f"multiple of {GROUPNORM_GROUPS} for GroupNorm; {width} is not",
            )
        if c.num_head_channels > 0 and width % c.num_head_channels:
            fail("num_head_channels", f"must divide every level width; {width} is not a multiple")
    if c.num_head_channels <= 0 and c.num_head_channels != -1:
        fail("num_head_channels", "must be positive, or -1 to use num_heads")
    if c.num_head_channels == -1 and c.num_heads <= 0:
        fail("num_heads", "must be positive when num_head_channels is -1")
    if c.xf_width % c.xf_heads:
        fail("xf_heads", f"must divide xf_width {c.xf_width}")
    if c.noise_schedule not in NOISE_SCHEDULES:
        fail("noise_schedule", f"must be one of {', '.join(NOISE_SCHEDULES)}")
    if not isinstance(c.timestep_respacing, str):
        fail("timestep_respacing", 'must be a string such as "100", "fast27" or "ddim50"')
    if not 0.0 <= float(c.dropout) < 1.0:
        fail("dropout", "must be in [0, 1)")
    if c.resblock_updown is not True:
        fail("resblock_updown", "only True is supported (every official checkpoint resamples in ResBlocks)")
    if c.super_res and c.image_size % 4:
        fail("image_size", "an upsampler's image_size must be a multiple of 4 (its input is 1/4)")
