"""Training data: a folder of images with same-name ``.txt`` captions, served in a seeded order.

``photos/cat.jpg`` + ``photos/cat.txt`` is one example (sub-folders are searched too). Batch `step`
is a pure function of (seed, step, batch size): the order is a fresh permutation per epoch drawn
from (seed, epoch), and each example's crop, flip and caption dropout come from its own generator
seeded by (seed, position in the stream). Resuming at a step therefore replays exactly the batches
an uninterrupted run would have seen, with no state to save but the step.

Base models get a random square crop (a side of `crop_min`..1 of the short side, anywhere),
resized to the model size. Flips are off by default: captions may say "left" or "right".
Upsamplers get a crop resized to their size (then, with `patch_size`, a random patch of that), and
the low-resolution input is that patch reduced 4x with an antialiased bicubic filter, kept as 8-bit
values, as the pipeline quantises the base model's output before upsampling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import InvalidParameter

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
RESIZE = Image.Resampling.BICUBIC  # antialiased when reducing


@dataclass(frozen=True)
class Example:
    image: Path
    caption: str


@dataclass(frozen=True)
class Batch:
    images: Tensor  # float32 [B, 3, S, S] in [-1, 1], on the 8-bit grid
    captions: list[str]  # after caption dropout ("" = unconditional)
    low_res: Tensor | None = None  # float32 [B, 3, S/4, S/4] for upsamplers


def find_examples(folder: str | Path) -> list[Example]:
    """Every image under `folder` with a same-name .txt caption, sorted by path.

    Images without a caption are skipped (counted in a warning); no example at all is a ValueError.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InvalidParameter(f"data: {root} is not a folder of images with .txt captions")
    examples, uncaptioned = [], 0
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        text = path.with_suffix(".txt")
        if not text.is_file():
            uncaptioned += 1
            continue
        examples.append(Example(image=path, caption=" ".join(text.read_text(encoding="utf-8").split())))
    if uncaptioned:
        logger.warning("%d image(s) in %s have no .txt caption and are skipped", uncaptioned, root)
    if not examples:
        raise InvalidParameter(f"data: no image with a same-name .txt caption found in {root}")
    return examples


def to_tensor(images: list[Image.Image]) -> Tensor:
    """RGB PIL images of one size -> float32 [B, 3, H, W] in [-1, 1]."""
    array = np.stack([np.asarray(im, dtype=np.uint8) for im in images])  # [B, H, W, 3]
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1


class ImageCaptionData:
    """Deterministic batches of (image, caption) for one model size (see the module docstring)."""

    def __init__(
        self,
        examples: list[Example],
        *,
        image_size: int,
        super_res: bool = False,
        patch_size: int | None = None,
        crop_min: float = 1.0,
        flip: bool = False,
        caption_dropout: float = 0.2,
        seed: int = 0,
    ) -> None:
        if not examples:
            raise InvalidParameter("data: no examples")
        if not 0.0 < crop_min <= 1.0:
            raise InvalidParameter(f"crop_min: must be in (0, 1] (got {crop_min})")
        if not 0.0 <= caption_dropout <= 1.0:
            raise InvalidParameter(f"caption_dropout: must be in [0, 1] (got {caption_dropout})")
        patch_size = image_size if patch_size is None else patch_size
        if not 0 < patch_size <= image_size or (super_res and patch_size % 4):
            raise InvalidParameter(
                f"patch_size: must be in 1..{image_size}"
                f"{' and a multiple of 4' if super_res else ''} (got {patch_size})"
            )
        self.examples = examples
        self.image_size, self.super_res, self.patch_size = image_size, super_res, patch_size
        self.crop_min, self.flip, self.caption_dropout, self.seed = crop_min, flip, caption_dropout, seed
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, permutation), the current one

    def __len__(self) -> int:
        return len(self.examples)

    def index(self, position: int) -> int:
        """The example at `position` of the stream (epoch = position // len, fresh order per epoch)."""
        epoch, offset = divmod(position, len(self.examples))
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.examples)))
        return int(self._order[1][offset])

    def batch(self, step: int, batch_size: int) -> Batch:
        """Batch number `step` (0-based) of `batch_size` examples."""
        positions = range(step * batch_size, (step + 1) * batch_size)
        items = [self.item(p) for p in positions]
        return self._collate(items)

    def item(self, position: int) -> tuple[Image.Image, Image.Image | None, str]:
        """(image, low-res or None, caption) at a stream position, augmented by its own generator."""
        example = self.examples[self.index(position)]
        rng = np.random.default_rng([self.seed, position, 1])
        with Image.open(example.image) as opened:
            image = opened.convert("RGB")
        image = self._crop(image, rng)
        low = None
        if self.super_res:
            if self.patch_size < self.image_size:
                left, top = (int(v) for v in rng.integers(0, self.image_size - self.patch_size + 1, size=2))
                image = image.crop((left, top, left + self.patch_size, top + self.patch_size))
            low = image.resize((self.patch_size // 4,) * 2, RESIZE)
        caption = "" if rng.random() < self.caption_dropout else example.caption
        return image, low, caption

    def fixed(self, count: int) -> Batch:
        """The first `count` examples with no augmentation and no dropout (for sample grids)."""
        items = []
        for example in self.examples[:count]:
            with Image.open(example.image) as opened:
                image = self._resize_square(opened.convert("RGB"), side=1.0, at=(0.5, 0.5))
            low = image.resize((self.image_size // 4,) * 2, RESIZE) if self.super_res else None
            items.append((image, low, example.caption))
        return self._collate(items)

    def _crop(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        side = float(rng.uniform(self.crop_min, 1.0)) if self.crop_min < 1.0 else 1.0
        at = (float(rng.random()), float(rng.random()))
        flip = self.flip and rng.random() < 0.5
        image = self._resize_square(image, side=side, at=at)
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else image

    def _resize_square(self, image: Image.Image, *, side: float, at: tuple[float, float]) -> Image.Image:
        """A square of `side` x the short side, placed at fractions `at` of the room left, resized."""
        width, height = image.size
        s = side * min(width, height)
        left, top = at[0] * (width - s), at[1] * (height - s)
        size = (self.image_size, self.image_size)
        if (width, height) == size and s == width:
            return image
        return image.resize(size, RESIZE, box=(left, top, left + s, top + s))

    @staticmethod
    def _collate(items: list[tuple[Image.Image, Image.Image | None, str]]) -> Batch:
        images = to_tensor([i[0] for i in items])
        low = to_tensor([i[1] for i in items]) if items[0][1] is not None else None
        return Batch(images=images, captions=[i[2] for i in items], low_res=low)
