"""What a pipeline run yields: progress after every step, then one output with the images."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from torch import Tensor

from ..progress import StepProgress
from .images import preview_png


@dataclass(frozen=True)
class StageProgress:
    """Yielded after every sampling step of every stage."""

    progress: StepProgress  # which step of which stage (stage labels as in `PipelineOutput.chain`)
    elapsed: float  # seconds since the run started
    pred_x0: Tensor = field(repr=False)  # [B, 3, h, w] in [-1, 1]: the current estimate, for previews

    def preview_png(self, row: int) -> bytes:
        """Sample `row`'s current estimate as a small PNG (rendered on demand: most steps need none)."""
        return preview_png(self.pred_x0[row])


@dataclass(frozen=True)
class GeneratedImage:
    image: Image.Image
    png: bytes  # the image as PNG with the generation parameters in a text chunk
    seed: int
    prompt: str
    metadata: dict[str, Any]  # what the PNG chunk holds


@dataclass(frozen=True)
class PipelineOutput:
    """The result of one run: one image per sample, in the order the samples were given."""

    images: list[GeneratedImage]
    chain: list[str]  # how the size was reached, e.g. ["base 64", "upsample 256", "lanczos 128"]
    stage_seconds: dict[str, float]
    total_seconds: float
    peak_memory_bytes: int | None  # peak device memory (CUDA), None on the CPU
    models: dict[str, str]  # stage -> model name
