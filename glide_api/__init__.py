"""glide-api: OpenAI's GLIDE text-to-image models, as a library and a self-hosted service.

    import glide_api
    model = glide_api.create_model("base")        # or "upsample", "base-inpaint", "upsample-inpaint"
    model.load_state_dict(state_dict)              # official key names, strict
    out = model(x, timesteps, tokens=tokens, mask=mask)   # [B, 6, H, W]

Names are imported on first use, so `glide_api.client` (an HTTP client) and the command line's help
do not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "classifier_free_guidance": "glide_api.diffusion.guidance",
    "RecordedNoise": "glide_api.diffusion.samplers",
    "SampleStep": "glide_api.diffusion.samplers",
    "SeededNoise": "glide_api.diffusion.samplers",
    "sample": "glide_api.diffusion.samplers",
    "sample_to_end": "glide_api.diffusion.samplers",
    "Schedule": "glide_api.diffusion.schedule",
    "space_timesteps": "glide_api.diffusion.schedule",
    "ChecksumMismatch": "glide_api.errors",
    "DownloadError": "glide_api.errors",
    "GlideError": "glide_api.errors",
    "HostUnreachable": "glide_api.errors",
    "StateDictMismatch": "glide_api.errors",
    "WeightsNotFound": "glide_api.errors",
    "ModelConfig": "glide_api.models.config",
    "GlideUNet": "glide_api.models.glide",
    "TextEmbedding": "glide_api.models.glide",
    "autocast": "glide_api.models.glide",
    "create_model": "glide_api.models.glide",
    "GlideTokenizer": "glide_api.models.tokenizer",
    "load_tokenizer": "glide_api.models.tokenizer",
    "WeightsSource": "glide_api.models.weights_source",
}

__all__ = [  # noqa: RUF022 - the lazily imported names, as listed above
    "__version__",
    "ChecksumMismatch",
    "DownloadError",
    "GlideError",
    "GlideTokenizer",
    "GlideUNet",
    "HostUnreachable",
    "ModelConfig",
    "RecordedNoise",
    "SampleStep",
    "Schedule",
    "SeededNoise",
    "StateDictMismatch",
    "TextEmbedding",
    "WeightsNotFound",
    "WeightsSource",
    "autocast",
    "classifier_free_guidance",
    "create_model",
    "load_tokenizer",
    "sample",
    "sample_to_end",
    "space_timesteps",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'glide_api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
