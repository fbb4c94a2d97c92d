"""Inpainting inputs: uploaded image + keep-mask -> tensors at each model size, and the x̂₀ hook.

Rule for sizes: a non-square image is centre-cropped to a square, then resized to each model's
size (image bicubic, mask nearest, so a pixel is either kept or painted). The mask is 1 where the
image is kept and 0 where the model paints (SPEC §4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor

from ..diffusion.samplers import DenoisedFn
from ..errors import InvalidParameter
from .images import from_pil, image_and_mask, mask_tensor
from .params import Sample


def center_square(image: Image.Image) -> Image.Image:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


class InpaintInputs:
    """The decoded image and mask of every sample of a batch."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.images: list[Image.Image] = []
        self.masks: list[Image.Image] = []
        for sample in samples:
            if sample.image is None:
                raise InvalidParameter("image: inpainting needs an image")
            image, mask = image_and_mask(sample.image, sample.mask)
            self.images.append(center_square(image))
            self.masks.append(center_square(mask))

    def tensors(self, size: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Images [B, 3, size, size] in [-1, 1] and keep-masks [B, 1, size, size] of 0/1."""
        images = torch.cat([from_pil(im, size) for im in self.images]).to(device)
        masks = torch.cat([mask_tensor(m, size) for m in self.masks]).to(device)
        return images, masks


def impose_known(image: Tensor, mask: Tensor) -> DenoisedFn:
    """x̂₀ ↦ the known pixels where mask = 1, the model's estimate elsewhere (SPEC §6.3)."""

    def denoised_fn(pred_x0: Tensor) -> Tensor:
        return pred_x0 * (1 - mask) + image * mask

    return denoised_fn
