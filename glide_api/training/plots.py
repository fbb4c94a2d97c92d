"""Pictures drawn with PIL alone: a training run's loss curve and sample grids, and line charts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

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


class _Chart:
    """A framed plot area: a linear or log x axis, a log y axis, grid lines and their labels."""

    left, right, top, bottom = 64, 16, 28, 36

    def __init__(
        self, size: tuple[int, int], *, xs: Sequence[float], ys: Sequence[float], log_x: bool
    ) -> None:
        self.image = Image.new("RGB", size, _BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.font = ImageFont.load_default()
        self.log_x = log_x
        positive = [max(v, 1e-8) for v in ys if math.isfinite(v)]
        self.low, self.high = _padded(math.log10(min(positive)), math.log10(max(positive)))
        x_values = [math.log10(x) for x in xs] if log_x else list(xs)
        if log_x:
            self.x0, self.x1 = _padded(min(x_values), max(x_values))
        else:
            self.x0, self.x1 = min(x_values), max(max(x_values), min(x_values) + 1)
        width, height = size
        for exponent in range(math.floor(self.low), math.ceil(self.high) + 1):
            for mult in (1, 2, 5):  # decades and their 2x, 5x
                value = mult * 10.0**exponent
                if 10**self.low <= value <= 10**self.high:
                    _, y = self.at(1.0, value)  # any x: only y matters
                    self.draw.line([(self.left, y), (width - self.right, y)], fill=_GRID)
                    self.draw.text((4, y - 6), f"{value:g}", fill=_INK, font=self.font)
        if log_x:
            ticks = [
                m * 10.0**e for e in range(math.floor(self.x0), math.ceil(self.x1) + 1) for m in (1, 2, 5)
            ]
        else:
            ticks = [self.x0 + (self.x1 - self.x0) * i / 5 for i in range(6)]
        for tick in ticks:
            if self.x0 - 1e-9 <= self._axis_x(tick) <= self.x1 + 1e-9:
                x, _ = self.at(tick, 10**self.low)
                self.draw.line([(x, self.top), (x, height - self.bottom)], fill=_GRID)
                self.draw.text(
                    (x - 10, height - self.bottom + 6), f"{round(tick)}", fill=_INK, font=self.font
                )

    def _axis_x(self, x: float) -> float:
        return math.log10(x) if self.log_x else x

    def at(self, x: float, y: float) -> tuple[float, float]:
        width, height = self.image.size
        u = (self._axis_x(x) - self.x0) / (self.x1 - self.x0)
        w = (math.log10(max(y, 1e-8)) - self.low) / (self.high - self.low)
        return self.left + u * (width - self.left - self.right), self.top + (1 - w) * (
            height - self.top - self.bottom
        )

    def finish(self, title: str) -> Image.Image:
        width, height = self.image.size
        self.draw.rectangle([self.left, self.top, width - self.right, height - self.bottom], outline=_INK)
        self.draw.text((self.left, 8), title, fill=_INK, font=self.font)
        return self.image


def _padded(low: float, high: float) -> tuple[float, float]:
    return (low - 0.5, high + 0.5) if high - low < 1e-6 else (low, high)


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
    chart = _Chart(size, xs=[steps[0], steps[-1]], ys=losses, log_x=False)
    points = [(s, v) for s, v in zip(steps, losses, strict=True) if math.isfinite(v)]
    chart.draw.line([chart.at(s, v) for s, v in points], fill=_RAW, width=1)
    averaged = smooth([v for _, v in points], span=max(5, len(points) // 30))
    chart.draw.line(
        [chart.at(s, v) for (s, _), v in zip(points, averaged, strict=True)], fill=_SMOOTH, width=2
    )
    return chart.finish(f"{title}: last {averaged[-1]:.4g} (moving average), step {steps[-1]}")


# Distinct on white and in grey print: blue, orange, green, red, purple, brown.
_SERIES = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    size: tuple[int, int] = (720, 420),
) -> Image.Image:
    """(x, y) points per named series, as lines with dots on log-log axes, with a legend."""
    points = [p for line in series.values() for p in line]
    if len(points) < 2 or any(x <= 0 or y <= 0 for x, y in points):
        raise InvalidParameter("line_chart needs at least two points, all positive")
    if len(series) > len(_SERIES):
        raise InvalidParameter(f"line_chart draws at most {len(_SERIES)} series")
    chart = _Chart(size, xs=[x for x, _ in points], ys=[y for _, y in points], log_x=True)
    for k, (name, line) in enumerate(series.items()):
        colour = _SERIES[k]
        xy = [chart.at(x, y) for x, y in sorted(line)]
        if len(xy) > 1:
            chart.draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            chart.draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        legend_y = chart.top + 8 + 14 * k
        chart.draw.line([(size[0] - 190, legend_y + 6), (size[0] - 170, legend_y + 6)], fill=colour, width=3)
        chart.draw.text((size[0] - 164, legend_y), name, fill=_INK, font=chart.font)
    chart.draw.text((size[0] // 2 - 60, size[1] - 14), x_label, fill=_INK, font=chart.font)
    return chart.finish(title)
