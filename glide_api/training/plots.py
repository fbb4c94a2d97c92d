"""Pictures of a training run, drawn with PIL alone: the loss curve and sample grids."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..errors import InvalidParameter

_BACKGROUND, _INK, _GRID = (255, 255, 255), (40, 40, 40), (225, 225, 225)
_RAW, _SMOOTH = (170, 190, 230), (30, 80, 200)


def grid(rows: Sequence[Sequence[Image.Image]], *, gap: int = 2) -> Image.Image:
    """Rows of images (each row's images of one size) on a white sheet, `gap` px apart."""
    widths = [sum(im.width for im in row) + gap * (len(row) - 1) for row in rows]
    heights = [max(im.height for im in row) for row in rows]
    sheet = Image.new("RGB", (max(widths), sum(heights) + gap * (len(rows) - 1)), _BACKGROUND)
    y = 0
    for row, height in zip(rows, heights, strict=True):
        x = 0
        for im in row:
            sheet.paste(im.convert("RGB"), (x, y))
            x += im.width + gap
        y += height + gap
    return sheet


def smooth(values: Sequence[float], *, span: int) -> list[float]:
    """An exponential moving average with a debiased start (as TensorBoard draws it)."""
    alpha = 2.0 / (span + 1)
    out, average, weight = [], 0.0, 0.0
    for v in values:
        average = (1 - alpha) * average + alpha * v
        weight = (1 - alpha) * weight + alpha
        out.append(average / weight)
    return out


def loss_curve(
    steps: Sequence[int],
    losses: Sequence[float],
    *,
    size: tuple[int, int] = (720, 400),
    title: str = "training loss",
) -> Image.Image:
    """The loss per step (faint) and its moving average (bold), on a log scale."""
    if len(steps) != len(losses) or len(steps) < 2:
        raise InvalidParameter("loss_curve needs at least two (step, loss) points")
    width, height = size
    left, right, top, bottom = 64, 16, 28, 36
    image = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    positive = [max(v, 1e-8) for v in losses if math.isfinite(v)]
    low, high = math.log10(min(positive)), math.log10(max(positive))
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    x0, x1 = steps[0], max(steps[-1], steps[0] + 1)

    def at(step: float, value: float) -> tuple[float, float]:
        u = (step - x0) / (x1 - x0)
        w = (math.log10(max(value, 1e-8)) - low) / (high - low)
        return left + u * (width - left - right), top + (1 - w) * (height - top - bottom)

    for exponent in range(math.floor(low), math.ceil(high) + 1):  # decades and their 2x, 5x
        for mult in (1, 2, 5):
            value = mult * 10.0**exponent
            if 10**low <= value <= 10**high:
                _, y = at(x0, value)
                draw.line([(left, y), (width - right, y)], fill=_GRID)
                draw.text((4, y - 6), f"{value:g}", fill=_INK, font=font)
    for i in range(6):
        step = x0 + (x1 - x0) * i / 5
        x, _ = at(step, 10**low)
        draw.line([(x, top), (x, height - bottom)], fill=_GRID)
        draw.text((x - 10, height - bottom + 6), f"{round(step)}", fill=_INK, font=font)
    points = [(s, v) for s, v in zip(steps, losses, strict=True) if math.isfinite(v)]
    draw.line([at(s, v) for s, v in points], fill=_RAW, width=1)
    averaged = smooth([v for _, v in points], span=max(5, len(points) // 30))
    draw.line([at(s, v) for (s, _), v in zip(points, averaged, strict=True)], fill=_SMOOTH, width=2)
    draw.rectangle([left, top, width - right, height - bottom], outline=_INK)
    draw.text(
        (left, 8),
        f"{title}: last {averaged[-1]:.4g} (moving average), step {steps[-1]}",
        fill=_INK,
        font=font,
    )
    return image
