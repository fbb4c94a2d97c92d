"""glide-api: OpenAI's GLIDE text-to-image models, as a library and a self-hosted service.

    import glide_api
    model = glide_api.create_model("base")        # or "upsample", "base-inpaint", "upsample-inpaint"
    model.load_state_dict(state_dict)              # official key names, strict
    out = model(x, timesteps, tokens=tokens, mask=mask)   # [B, 6, H, W]
"""

from .diffusion.guidance import classifier_free_guidance
from .diffusion.samplers import RecordedNoise, SampleStep, SeededNoise, sample, sample_to_end
from .diffusion.schedule import Schedule, space_timesteps
from .errors import (
    ChecksumMismatch,
    DownloadError,
    GlideError,
    HostUnreachable,
    StateDictMismatch,
    WeightsNotFound,
)
from .models.config import ModelConfig
from .models.glide import GlideUNet, TextEmbedding, autocast, create_model
from .models.tokenizer import GlideTokenizer, load_tokenizer

__version__ = "0.1.0"

__all__ = [
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
    "__version__",
    "autocast",
    "classifier_free_guidance",
    "create_model",
    "load_tokenizer",
    "sample",
    "sample_to_end",
    "space_timesteps",
]
