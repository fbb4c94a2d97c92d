"""How well a model trained on the synthetic shapes follows prompts, judged by `synthetic.classify`.

Prompts name a shape colour, a shape and a background colour; each sample is read back by the
classifier and scored on each of the three. Chance levels for a model that ignores the prompt:
1/6 for the shape colour and for the background (six colours), 1/4 for the shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from .synthetic import COLOURS, SHAPES, Reading, classify

CHANCE = {"colour": 1 / len(COLOURS), "background": 1 / len(COLOURS), "shape": 1 / len(SHAPES)}


@dataclass(frozen=True)
class Target:
    colour: str
    shape: str
    background: str

    @property
    def prompt(self) -> str:
        return f"a {self.colour} {self.shape} on a {self.background} background"


@dataclass(frozen=True)
class Adherence:
    """Share of samples whose colour, background and shape the classifier agrees with."""

    colour: float
    background: float
    shape: float
    readings: tuple[Reading, ...]

    def __str__(self) -> str:
        return (f"colour {self.colour:.0%} (chance {CHANCE['colour']:.0%}), background "
                f"{self.background:.0%} (chance {CHANCE['background']:.0%}), shape {self.shape:.0%} "
                f"(chance {CHANCE['shape']:.0%}) over {len(self.readings)} samples")


def targets(count: int) -> list[Target]:
    """`count` prompts cycling through every colour, shape and background evenly (deterministic)."""
    names = list(COLOURS)
    out = []
    for i in range(count):
        colour = names[i % len(names)]
        shape = SHAPES[(i // len(names)) % len(SHAPES)]
        others = [n for n in names if n != colour]
        background = others[(i // len(names) + i) % len(others)]
        out.append(Target(colour=colour, shape=shape, background=background))
    return out


def score(images: Sequence[Image.Image], wanted: Sequence[Target]) -> Adherence:
    readings = tuple(classify(im) for im in images)
    n = len(readings)
    if n == 0 or n != len(wanted):
        raise ValueError("score needs one target per image")
    hits = {k: sum(getattr(r, k) == getattr(t, k) for r, t in zip(readings, wanted, strict=True)) / n
            for k in ("colour", "background", "shape")}
    return Adherence(**hits, readings=readings)
