"""A synthetic image-caption data set of coloured shapes, and a classifier that reads them back.

Each image is one shape (circle, square, triangle or cross) of one named colour, of a small,
medium or large size at a random position, on a plain background of another named colour; its
caption says so in slightly varied words ("a small red circle on a blue background"). Images are
drawn at 2x and reduced (antialiased edges), 256 px by default so an upsampler can train on them.
Everything follows from (seed, index): image i is the same whatever the count.

`classify` is the matching judge for generated images: the background is the colour of the border,
the shape is every pixel far from it; its colour is the nearest named colour to the shape pixels'
median, and its kind follows from how much of its bounding box it fills and where its mass sits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InvalidParameter

# Well separated in RGB: every pair is more than 150 apart.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (35, 60, 225),
    "yellow": (245, 215, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SIZES: dict[str, tuple[float, float]] = {  # the shape's extent, as a fraction of the image side
    "small": (0.24, 0.32),
    "medium": (0.40, 0.48),
    "large": (0.58, 0.68),
}
SIZE_WORDS = {"small": ("small", "little"), "medium": ("medium", "medium-sized"), "large": ("large", "big")}
# How far a shape's centre may lie from the image's middle, as a fraction of the side; the shape
# always stays inside the picture. 0.5 (the default) lets it sit anywhere it fits; 0 centres every
# shape, where the caption alone fixes the outline (docs/training.md: why the demo base uses both).
DEFAULT_SPREAD = 0.5
METADATA_FILE = "metadata.jsonl"
_JITTER = 12  # +- per channel on each colour, so the model sees shades, not 6 exact values


@dataclass(frozen=True)
class ShapeSpec:
    """What one synthetic image shows; `center` and `extent` are fractions of the image side."""

    shape: str
    colour: str
    background: str
    size: str
    center: tuple[float, float]
    extent: float
    caption: str


def sample_spec(seed: int, index: int, *, spread: float = DEFAULT_SPREAD) -> ShapeSpec:
    """The contents of image `index` of the data set made from `seed` and `spread`."""
    _check_spread(spread)
    rng = np.random.default_rng([seed, index])
    shape = SHAPES[rng.integers(len(SHAPES))]
    names = list(COLOURS)
    colour = names[rng.integers(len(names))]
    background = [n for n in names if n != colour][rng.integers(len(names) - 1)]
    size = list(SIZES)[rng.integers(len(SIZES))]
    low, high = SIZES[size]
    extent = float(rng.uniform(low, high))
    margin = extent / 2 + 0.04
    lowest, highest = max(margin, 0.5 - spread), min(1 - margin, 0.5 + spread)
    center = (float(rng.uniform(lowest, highest)), float(rng.uniform(lowest, highest)))
    return ShapeSpec(
        shape=shape,
        colour=colour,
        background=background,
        size=size,
        center=center,
        extent=extent,
        caption=caption(shape, colour, background, size, rng),
    )


def _check_spread(spread: float) -> None:
    if not 0.0 <= spread <= 0.5:
        raise InvalidParameter(f"spread: must be between 0 and 0.5 of the image side (got {spread})")


def caption(shape: str, colour: str, background: str, size: str, rng: np.random.Generator) -> str:
    """One of a few phrasings; the size is sometimes left out, the background rarely."""
    size_word = SIZE_WORDS[size][rng.integers(2)] + " " if rng.random() < 0.7 else ""
    article = "an" if (size_word or colour)[0] in "aeiou" else "a"
    thing = f"{size_word}{colour} {shape}"
    templates = (
        f"{article} {thing} on a {background} background",
        f"{article} {thing} on a {background} background",
        f"{article} {thing} against a {background} background",
        f"{thing} on {background}",
        f"{thing}, {background} background",
        f"{article} {thing}",
    )
    weights = np.array([0.3, 0.15, 0.2, 0.15, 0.12, 0.08])
    return templates[rng.choice(len(templates), p=weights / weights.sum())]


def render(spec: ShapeSpec, *, size: int = 256, seed: int = 0, index: int = 0) -> Image.Image:
    """Draw a spec at `size` px (2x supersampled); colours jittered from (seed, index)."""
    rng = np.random.default_rng([seed, index, 1])

    def shade(name: str) -> tuple[int, int, int]:
        base = np.array(COLOURS[name]) + rng.integers(-_JITTER, _JITTER + 1, size=3)
        return tuple(int(v) for v in np.clip(base, 0, 255))

    big = 2 * size
    image = Image.new("RGB", (big, big), shade(spec.background))
    draw = ImageDraw.Draw(image)
    cx, cy = spec.center[0] * big, spec.center[1] * big
    r = spec.extent * big / 2
    fill = shade(spec.colour)
    if spec.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif spec.shape == "square":
        s = r * 0.9  # a square looks larger than a circle of the same extent
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif spec.shape == "triangle":  # apex up, equal sides
        h = 2 * r * 0.9
        half = h / np.sqrt(3)
        top, bottom = cy - h / 2, cy + h / 2
        draw.polygon([(cx, top), (cx + half, bottom), (cx - half, bottom)], fill=fill)
    elif spec.shape == "cross":  # a plus sign, arms one third of its width
        t = r / 3
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
    else:
        raise InvalidParameter(f"shape: must be one of {', '.join(SHAPES)} (got {spec.shape!r})")
    return image.resize((size, size), Image.Resampling.LANCZOS)


def write_dataset(
    folder: str | Path, *, count: int, seed: int = 0, size: int = 256, spread: float = DEFAULT_SPREAD
) -> Path:
    """Write images 0..count-1 as NNNNN.png + NNNNN.txt (+ metadata.jsonl); existing files are kept
    (so a folder is extended only with the seed, size and spread it was made with).

    Deterministic from `seed` and `spread`: the same call always writes the same bytes. Returns the folder.
    """
    if count < 1:
        raise InvalidParameter(f"count: must be a positive number of images (got {count})")
    _check_spread(spread)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        spec = sample_spec(seed, i, spread=spread)
        png, txt = folder / f"{i:05d}.png", folder / f"{i:05d}.txt"
        if not (png.is_file() and txt.is_file()):
            render(spec, size=size, seed=seed, index=i).save(png)
            txt.write_text(spec.caption + "\n", encoding="utf-8")
        lines.append(json.dumps({"file": png.name, **asdict(spec)}))
    (folder / METADATA_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


# ---- the classifier ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """What `classify` sees in an image. `shape` is "none" when nothing stands out."""

    background: str
    colour: str | None
    shape: str
    fill: float  # shape pixels / bounding-box pixels
    offset: float  # (mass centre - box centre) / box height, downwards positive
    area: float  # shape pixels / image pixels


def nearest_colour(rgb: np.ndarray) -> str:
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=np.float64)
    return names[int(np.argmin(((palette - rgb) ** 2).sum(axis=1)))]


def classify(image: Image.Image | np.ndarray, *, size: int = 64) -> Reading:
    """Read background colour, shape colour and shape kind from an RGB image (any size)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    pixels = np.asarray(image, dtype=np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    bg_rgb = np.median(border, axis=0)
    background = nearest_colour(bg_rgb)
    distance = np.sqrt(((pixels - bg_rgb) ** 2).sum(axis=-1))
    mask = distance > 80
    # Drop speckle: keep a pixel only when at least two of its four neighbours agree.
    padded = np.pad(mask, 1)
    neighbours = padded[:-2, 1:-1].astype(int) + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
    mask &= neighbours >= 2
    area = float(mask.mean())
    if mask.sum() < 12:
        return Reading(background=background, colour=None, shape="none", fill=0.0, offset=0.0, area=area)
    colour = nearest_colour(np.median(pixels[mask], axis=0))
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    height, width = y1 - y0 + 1, x1 - x0 + 1
    fill = float(mask.sum() / (height * width))
    offset = float((ys.mean() - (y0 + y1) / 2) / height)
    if offset > 0.07:
        shape = "triangle"  # apex up: the mass sits low in its box
    elif fill > 0.9:
        shape = "square"
    elif fill > 0.7:
        shape = "circle"
    else:
        shape = "cross"
    return Reading(background=background, colour=colour, shape=shape, fill=fill, offset=offset, area=area)


def parse_caption(text: str) -> dict[str, str | None]:
    """The colour, shape and background a caption or prompt names (None where it names none)."""
    words = text.lower().replace(",", " ").split()
    shape = next((w for w in words if w in SHAPES), None)
    colours = [w for w in words if w in COLOURS]
    background = None
    if "background" in words or "on" in words or "against" in words:
        background = colours[1] if len(colours) > 1 else None
    return {"colour": colours[0] if colours else None, "shape": shape, "background": background}
