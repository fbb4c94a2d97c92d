"""Model configurations to train from scratch: the demo pair, and where they come from by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidParameter
from ..models.config import PRESETS, ModelConfig

# The shipped demo pair: a 64 px base and a 256 px upsampler with byte-level tokens (n_vocab 257),
# the same 4x relationship as the official pair, small enough to train on a CPU. Every level is at
# least 64 channels wide: GroupNorm has 32 groups, and at 32 channels each group is one channel, so
# every norm would subtract each channel's spatial mean and the network could not see (or set) the
# flat colour of a region, which is most of what these pictures are. The base attends to the text
# at 16 and 8 px, where a shape's outline is still a few cells across (docs/training.md: the first
# demo base attended at 8 px only and never learned the words for the kinds of shape).
DEMO_BASE: dict[str, Any] = {
    "image_size": 64,
    "num_channels": 64,
    "num_res_blocks": 1,
    "channel_mult": "1,1,1,1",
    "num_head_channels": 32,
    "attention_resolutions": "16,8",
    "dropout": 0.0,
    "text_ctx": 64,
    "xf_width": 128,
    "xf_layers": 2,
    "xf_heads": 4,
    "n_vocab": 257,
}
DEMO_UPSAMPLE: dict[str, Any] = {
    "image_size": 256,
    "super_res": True,
    "noise_schedule": "linear",
    "num_channels": 64,
    "num_res_blocks": 1,
    "channel_mult": "1,1,1,1,1,1",
    "num_head_channels": 32,
    "attention_resolutions": "",
    "dropout": 0.0,
    "text_ctx": 64,
    "xf_width": 64,
    "xf_layers": 1,
    "xf_heads": 2,
    "n_vocab": 257,
}
TRAIN_PRESETS: dict[str, dict[str, Any]] = {"demo-base": DEMO_BASE, "demo-upsample": DEMO_UPSAMPLE}


def model_config(spec: str) -> ModelConfig:
    """A configuration by name (demo-base, demo-upsample, or an official one) or from a JSON file."""
    if spec in TRAIN_PRESETS:
        return ModelConfig.from_options(TRAIN_PRESETS[spec])
    if spec in PRESETS:
        return ModelConfig.preset(spec)
    if Path(spec).is_file():
        return ModelConfig.from_json_file(spec)
    raise InvalidParameter(
        f"config: {spec!r} is neither a preset ({', '.join([*TRAIN_PRESETS, *PRESETS])}) "
        f"nor a JSON file of model options"
    )
