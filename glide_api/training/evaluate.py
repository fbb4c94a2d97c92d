"""How well a model trained on the synthetic shapes follows prompts, judged by `synthetic.classify`.

Prompts name a shape colour, a shape and a background colour; each sample is read back by the
classifier and scored on each of the three. Chance levels for a model that ignores the prompt:
1/6 for the shape colour and for the background (six colours), 1/4 for the shape.

`measure` samples a base model the way the demo's model card and tests/test_demo.py do;
`word_influence` shows which words of a prompt the network uses at all, long before they show in
its pictures; `glide-api evaluate` runs both from the command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from ..errors import InvalidParameter
from ..options import GUIDANCE_SCALE
from .synthetic import COLOURS, SHAPES, Reading, classify

if TYPE_CHECKING:
    from ..pipeline.glide_pipeline import GlidePipeline
    from ..pipeline.loading import LoadedModel

# Guided as the service samples by default, and unguided (which ignores the prompt): the baseline.
EVALUATED_GUIDANCE: tuple[float, ...] = (GUIDANCE_SCALE.default, 0.0)
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
        return (
            f"colour {self.colour:.0%} (chance {CHANCE['colour']:.0%}), background "
            f"{self.background:.0%} (chance {CHANCE['background']:.0%}), shape {self.shape:.0%} "
            f"(chance {CHANCE['shape']:.0%}) over {len(self.readings)} samples"
        )


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
        raise InvalidParameter("score needs one target per image")
    hits = {
        k: sum(getattr(r, k) == getattr(t, k) for r, t in zip(readings, wanted, strict=True)) / n
        for k in ("colour", "background", "shape")
    }
    return Adherence(**hits, readings=readings, images=tuple(images))


def measure(
    pipeline: GlidePipeline,
    *,
    count: int = 48,
    first_seed: int = 1000,
    guidance_scales: Sequence[float] = EVALUATED_GUIDANCE,
    respacing: str = "ddim16",
    sampler: str | None = None,
) -> dict[float, Adherence]:
    """Score the pipeline's base model at its own size on `targets(count)`, prompt i with seed
    `first_seed + i`, at each guidance scale (all in one batch), sampled by `sampler` in the steps
    `respacing` names. Without a sampler, "ddimN" samples by DDIM in N steps and any other
    respacing (e.g. "100") ancestrally."""
    from ..pipeline.outputs import PipelineOutput
    from ..pipeline.params import BatchSettings, Sample

    wanted = _prompts_for(pipeline, count)
    samples = [
        Sample(prompt=t.prompt, seed=first_seed + i, guidance_scale=g)
        for g in guidance_scales
        for i, t in enumerate(wanted)
    ]
    if sampler is None:
        sampler = "ddim" if respacing.startswith("ddim") else "ancestral"
    settings = BatchSettings(
        size=pipeline.base.config.image_size,
        base_respacing=respacing,
        base_sampler=sampler,
        diffusion_steps=pipeline.base.config.diffusion_steps,
    )
    output = next(e for e in pipeline.stream(settings, samples) if isinstance(e, PipelineOutput))
    pictures = [g.image for g in output.images]
    return {g: score(pictures[k * count : (k + 1) * count], wanted) for k, g in enumerate(guidance_scales)}


def _prompts_for(pipeline: GlidePipeline, count: int) -> list[Target]:
    if pipeline.base is None:
        raise InvalidParameter("model: a base model is needed (upsamplers cannot be scored this way)")
    if count < 1:
        raise InvalidParameter(f"count: must be a positive number of prompts (got {count})")
    return targets(count)


def word_influences(
    pipeline: GlidePipeline, *, count: int = 8, timesteps: Sequence[int] = (500, 850)
) -> dict[str, dict[int, float]]:
    """`word_influence` of each kind of change in `word_changes`, over `targets(count)`, for the
    pipeline's base model: {"background": {500: ..., 850: ...}, ..., "a typo": {...}}."""
    wanted = _prompts_for(pipeline, count)
    assert pipeline.base is not None
    changes = [word_changes(t) for t in wanted]
    return word_influence(
        pipeline.base,
        [t.prompt for t in wanted],
        {part: [c[part] for c in changes] for part in changes[0]},
        timesteps=timesteps,
    )


def word_changes(target: Target) -> dict[str, str]:
    """`target`'s prompt with one word changed, per part of the prompt, and a one-letter typo for scale."""
    spare = next(n for n in COLOURS if n not in (target.colour, target.background))
    shape = SHAPES[(SHAPES.index(target.shape) + 1) % len(SHAPES)]
    return {
        "background": Target(target.colour, target.shape, spare).prompt,
        "shape colour": Target(spare, target.shape, target.background).prompt,
        "kind of shape": Target(target.colour, shape, target.background).prompt,
        "a typo": target.prompt.replace(target.shape, target.shape[:-2] + "x" + target.shape[-1], 1),
    }


def word_influence(
    model: LoadedModel,
    prompts: Sequence[str],
    changes: Mapping[str, Sequence[str]],
    *,
    timesteps: Sequence[int] = (500, 850),
    batch: int = 8,
    seed: int = 0,
) -> dict[str, dict[int, float]]:
    """How far each kind of prompt change moves the network's prediction of x0: for each name in
    `changes` (one changed prompt per prompt), the RMS difference between its predictions for
    prompts[k] and changes[name][k], for the same noised grey picture (`batch` noise draws from
    `seed`), averaged over k, per timestep. A word the network ignores moves it about as little as
    a typo does."""
    import torch

    from ..diffusion.schedule import Schedule, q_sample

    if not prompts or any(len(changed) != len(prompts) for changed in changes.values()):
        raise InvalidParameter("word_influence needs one changed prompt per prompt")
    c = model.config
    net, device = model.network, next(model.network.parameters()).device
    schedule = Schedule(noise_schedule=c.noise_schedule, diffusion_steps=c.diffusion_steps)
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 3, c.image_size, c.image_size)
    names = list(changes)
    moved: dict[str, dict[int, float]] = {name: {} for name in names}
    for step in timesteps:
        if not 0 <= step < c.diffusion_steps:
            raise InvalidParameter(f"timesteps: each must be in 0..{c.diffusion_steps - 1} (got {step})")
        t = torch.full((batch * (1 + len(names)),), step, device=device)
        x_t = q_sample(schedule, torch.zeros(shape), t[:batch].cpu(), torch.randn(shape, generator=generator))
        x_t = x_t.repeat(1 + len(names), 1, 1, 1).to(device, net.dtype)
        alpha = float(schedule.alphas_cumprod[step])
        distances: dict[str, list[float]] = {name: [] for name in names}
        for k, prompt in enumerate(prompts):
            # The prompt and each of its changes in one batch, on the same noise.
            texts = [text for text in (prompt, *(changes[name][k] for name in names)) for _ in range(batch)]
            tokens, mask = model.tokenizer.batch(texts, c.text_ctx)
            with torch.no_grad():
                eps = net(x_t, t, tokens.to(device), mask.to(device))[:, :3].float()
            # x0 = (x_t - sqrt(1 - a) eps) / sqrt(a): a change of eps moves x0 by sqrt((1-a)/a) times it
            eps = eps.reshape(1 + len(names), batch, *eps.shape[1:]) * ((1 - alpha) / alpha) ** 0.5
            for i, name in enumerate(names, start=1):
                distances[name].append(float((eps[i] - eps[0]).pow(2).mean().sqrt()))
        for name in names:
            moved[name][step] = sum(distances[name]) / len(distances[name])
    return moved
