"""How well a model trained on the synthetic shapes follows prompts, judged by `synthetic.classify`.

Prompts name a shape colour, a shape and a background colour; each sample is read back by the
classifier and scored on each of the three. Chance levels for a model that ignores the prompt:
1/6 for the shape colour and for the background (six colours), 1/4 for the shape.

`measure` samples a base model the way the demo's model card and tests/test_demo.py do;
`glide-api evaluate` runs it from the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from .synthetic import COLOURS, SHAPES, Reading, classify

if TYPE_CHECKING:
    from ..pipeline.text2im import GlidePipeline

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
    images: tuple[Image.Image, ...] = ()  # the pictures scored, in order

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
    return Adherence(**hits, readings=readings, images=tuple(images))


def measure(pipeline: GlidePipeline, *, count: int = 48, first_seed: int = 1000,
            guidance_scales: Sequence[float] = (3.0, 0.0),
            respacing: str = "ddim16") -> dict[float, Adherence]:
    """Score the pipeline's base model at its own size on `targets(count)`, prompt i with seed
    `first_seed + i`, at each guidance scale (all in one batch). `respacing` "ddimN" samples by
    DDIM in N steps; any other (e.g. "100") samples ancestrally."""
    from ..pipeline.outputs import PipelineOutput
    from ..pipeline.params import BatchSettings, Sample

    if pipeline.base is None:
        raise ValueError("model: a base model is needed (upsamplers cannot be scored this way)")
    if count < 1:
        raise ValueError(f"count: must be a positive number of prompts (got {count})")
    wanted = targets(count)
    samples = [Sample(prompt=t.prompt, seed=first_seed + i, guidance_scale=g)
               for g in guidance_scales for i, t in enumerate(wanted)]
    sampler = "ddim" if respacing.startswith("ddim") else "ancestral"
    settings = BatchSettings(size=pipeline.base.config.image_size, base_respacing=respacing,
                             base_sampler=sampler, diffusion_steps=pipeline.base.config.diffusion_steps)
    output = next(e for e in pipeline.stream(settings, samples) if isinstance(e, PipelineOutput))
    pictures = [g.image for g in output.images]
    return {g: score(pictures[k * count:(k + 1) * count], wanted) for k, g in enumerate(guidance_scales)}
