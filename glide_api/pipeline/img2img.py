"""Image-to-image: an input picture noised to `strength`, then sampled from there with the prompt.

The picture is centre-cropped to a square and resized (bicubic) to each stage's size, as
inpainting's image is. Every sampling stage — the base model and each upsampler pass — runs the
steps of its own schedule whose timestep t has t/T < strength, starting from the picture at the
stage's size diffused to the first of them: x = √ᾱ·x₀ + √(1−ᾱ)·ε, with ε the stage's start noise
(scaled by `upsample_temp` in the upsampler stages, as text-to-image's start noise is). When
strength keeps every step the start is that noise alone, exactly text-to-image's (at the top of the
schedule ᾱ is all but 0); when it keeps none the stage returns the picture itself. So strength 1 is
text-to-image with the same seed, and strength 0 returns the picture at the asked size (8-bit).
The upsampler stages are conditioned on the previous stage's result, as in text-to-image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..diffusion.schedule import Schedule, first_steps, q_sample
from ..errors import InvalidParameter
from .images import from_pil, open_image
from .inpaint import center_square
from .params import Sample


class Img2ImgInputs:
    """The decoded input picture of every sample of a batch."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.pictures = []
        for sample in samples:
            if sample.image is None:
                raise InvalidParameter("image: img2img needs an image")
            self.pictures.append(center_square(open_image(sample.image).convert("RGB")))

    def tensors(self, size: int, device: torch.device) -> Tensor:
        """The pictures [B, 3, size, size] in [-1, 1]."""
        return torch.cat([from_pil(picture, size) for picture in self.pictures]).to(device)


def start(
    schedule: Schedule, strength: float, picture: Tensor, noise: Tensor
) -> tuple[Schedule | None, Tensor]:
    """The part of `schedule` to sample and the state to start it from, for pictures [B, 3, s, s]
    and start noise of that shape; (None, picture) when no step is left to run."""
    kept = int((schedule.timesteps / schedule.diffusion_steps < strength).sum())
    if kept == len(schedule):
        return schedule, noise
    if kept == 0:
        return None, picture
    at = torch.full((picture.shape[0],), kept - 1, dtype=torch.int64)
    return first_steps(schedule, kept), q_sample(schedule, picture, at, noise)
