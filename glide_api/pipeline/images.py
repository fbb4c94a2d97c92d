"""Tensors <-> images: 8-bit conversion, PNG with the generation parameters, masks from uploads."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError
from torch import Tensor

from ..errors import InvalidParameter, TooLarge

METADATA_KEY = "glide-api"  # the PNG tEXt keyword holding the generation parameters as JSON
RESAMPLE = Image.Resampling.BICUBIC  # how inputs are resized to the model sizes (as the notebook)
DOWNSCALE = Image.Resampling.LANCZOS  # how outputs are reduced (e.g. 256 -> 128)


def to_uint8(x: Tensor) -> Tensor:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3], rounding as the reference displays it."""
    return ((x.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def quantize(x: Tensor) -> Tensor:
    """Snap [-1, 1] values to the 256 levels of an 8-bit image (the upsampler's low-res input)."""
    return ((x + 1) * 127.5).round() / 127.5 - 1


def to_pil(x: Tensor) -> list[Image.Image]:
    return [Image.fromarray(row.numpy(), mode="RGB") for row in to_uint8(x)]


def from_pil(image: Image.Image, size: int) -> Tensor:
    """An RGB image resized (bicubic) to size x size -> [1, 3, size, size] in [-1, 1]."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), RESAMPLE)
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    return data.permute(2, 0, 1)[None].float() / 127.5 - 1


def encode_png(image: Image.Image, metadata: dict[str, Any] | None = None) -> bytes:
    """PNG bytes; `metadata` goes into a tEXt chunk as JSON, readable by `read_png_metadata`."""
    info = None
    if metadata is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text(METADATA_KEY, json.dumps(metadata, sort_keys=True, ensure_ascii=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png_metadata(source: bytes | str | Path) -> dict[str, Any]:
    """The generation parameters stored in a PNG made by glide-api ({} if it has none)."""
    image = open_image(source)
    text = getattr(image, "text", {}).get(METADATA_KEY)
    return json.loads(text) if text else {}


def preview_png(x: Tensor) -> bytes:
    """A small PNG of one [3, h, w] estimate (progress previews; no metadata)."""
    return encode_png(to_pil(x[None])[0])


def strip(images: Sequence[Image.Image]) -> Image.Image:
    """Images side by side in one row (the original app's batch format)."""
    width = sum(im.width for im in images)
    height = max(im.height for im in images)
    out = Image.new("RGB", (width, height))
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width
    return out


def open_image(
    source: bytes | str | Path, *, name: str = "image", max_pixels: int | None = None
) -> Image.Image:
    """Decode an image file, with an `InvalidParameter` naming `name` (not a PIL exception) for data
    that is no image, and `TooLarge` for one of more than `max_pixels` pixels: that is read from the
    file's header, before anything is decoded."""
    image = _opened(source, name=name, max_pixels=max_pixels)
    _decode(image, name=name)
    return image


def image_and_mask(
    image_data: bytes, mask_data: bytes | None, *, max_pixels: int | None = None
) -> tuple[Image.Image, Image.Image]:
    """The RGB image and its keep-mask ("L": 255 keep, 0 paint) from uploaded files.

    A mask file with transparency is read by its alpha, as OpenAI's API does (transparent = paint);
    an opaque one (including an RGBA file whose alpha is all 255, as browser canvases save) by its
    grey levels (black = paint). Without a mask file, the image's own transparency is the mask.
    Image and mask must have the same size. Sizes are checked from the headers (`max_pixels`, and
    the mask against the image) before either file is decoded.
    """
    image = _opened(image_data, name="image", max_pixels=max_pixels)
    mask_image = None if mask_data is None else _opened(mask_data, name="mask", max_pixels=max_pixels)
    if mask_image is not None and mask_image.size != image.size:
        raise InvalidParameter(
            f"mask: its size {mask_image.size[0]}x{mask_image.size[1]} differs from "
            f"the image's {image.size[0]}x{image.size[1]}"
        )
    _decode(image, name="image")
    if mask_image is not None:
        _decode(mask_image, name="mask")
        alpha = _transparency(mask_image)
        mask = alpha if alpha is not None else mask_image.convert("L")
    else:
        mask = _transparency(image)
        if mask is None:
            raise InvalidParameter(
                "mask: give a mask image, or an image whose transparent pixels mark the area to paint"
            )
    return image.convert("RGB"), mask


def _opened(source: bytes | str | Path, *, name: str, max_pixels: int | None) -> Image.Image:
    """The image with only its header read (Pillow decodes lazily), within `max_pixels`."""
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as e:
        raise InvalidParameter(f"{name}: not a readable image ({_reason(e)})") from None
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise TooLarge(
            f"{name}: {width}x{height} is {width * height} pixels; this server takes at most "
            f"{max_pixels} (max_image_pixels)"
        )
    return image


def _decode(image: Image.Image, *, name: str) -> None:
    try:
        image.load()
    except (OSError, Image.DecompressionBombError, ValueError) as e:
        raise InvalidParameter(f"{name}: not a readable image ({_reason(e)})") from None


def _reason(error: Exception) -> str:
    return str(error).split(" <_io")[0]  # drop the buffer object's repr


def mask_tensor(mask: Image.Image, size: int) -> Tensor:
    """Keep-mask resized to size x size (nearest: no half-kept pixels) -> [1, 1, size, size] of 0/1."""
    if mask.size != (size, size):
        mask = mask.resize((size, size), Image.Resampling.NEAREST)
    data = torch.frombuffer(bytearray(mask.tobytes()), dtype=torch.uint8).reshape(1, 1, size, size)
    return (data >= 128).float()


def _transparency(image: Image.Image) -> Image.Image | None:
    """The alpha channel when the image has one that is not fully opaque, else None."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return None
    alpha = image.convert("RGBA").getchannel("A")
    return alpha if alpha.getextrema()[0] < 255 else None
