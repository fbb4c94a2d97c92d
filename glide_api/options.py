"""Every generation option, declared once: its name, type, default, range and help text.

Everything that offers these options derives from this table: the request dataclasses
(`pipeline/params.py`), the HTTP schemas and `/v1/settings` (and through it the web UI), the
command line's flags and their help, and the Python client. A default written anywhere else is a
bug.

This module imports nothing heavy (no torch), so the client and the command line's help can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import checks
from .errors import InvalidParameter

MAX_SEED = 2**32 - 1  # seeds are 32-bit, as torch.Generator.manual_seed takes them portably
DIFFUSION_STEPS = 1000  # the official models' schedule length: every respacing keeps a subset of it
SAMPLERS: tuple[str, ...] = ("ancestral", "ddim", "plms", "dpm++2m", "dpm++2m-sde")
# The kinds of request; image-to-image runs the text-to-image models from a noised input picture.
TASKS: tuple[str, ...] = ("text2im", "inpaint", "img2img")
# The upsampler's default sampler for inpainting (SPEC §6.3: ancestral steps keep the known region).
INPAINT_UPSAMPLE_SAMPLER = "ancestral"


@dataclass(frozen=True)
class Option:
    """One generation option.

    `name` is the name users see (form field, `--flag`, the original routes' query); `api_name` the
    v1 and OpenAI APIs' JSON field where that differs (OpenAI calls the image count `n`); `field` the
    `BatchSettings`/`GenerationRequest` field that holds it, where that differs. `default` None means
    the value is chosen at run time (a random seed, the models' size), as `help` says.
    """

    name: str
    kind: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    field: str = ""
    api_name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", self.field or self.name)
        object.__setattr__(self, "api_name", self.api_name or self.name)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, *, name: str | None = None) -> Any:
        """`value` if it obeys this option's type, range and choices; else `InvalidParameter` naming
        `name` (default: the option's user-facing name)."""
        label = name or self.name
        if self.choices is not None:
            return checks.one_of(label, value, self.choices)
        if self.kind is int:
            return checks.integer(label, value, minimum=_int(self.minimum), maximum=_int(self.maximum))
        if self.kind is float:
            return checks.number(label, value, minimum=self.minimum, maximum=self.maximum)
        return value

    def describe(self) -> dict[str, Any]:
        """JSON-safe: what `/v1/settings` tells a client (the web UI builds its form from it)."""
        return {
            "name": self.name,
            "type": self.kind.__name__,
            "default": self.default,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "choices": None if self.choices is None else list(self.choices),
            "help": self.help,
        }


SIZE = Option(
    "size",
    int,
    None,
    "output size in pixels, one of the sizes the loaded models make "
    "(default: the upsampler's, 256 with the official models)",
    minimum=1,
)
BATCH_SIZE = Option("batch_size", int, 1, "images to make from the prompt", minimum=1, api_name="n")
SEED = Option(
    "seed",
    int,
    None,
    "seed of the first image; image i uses seed+i (default: random, reported with the images)",
    minimum=0,
    maximum=MAX_SEED,
)
GUIDANCE_SCALE = Option(
    "guidance_scale",
    float,
    3.0,
    "classifier-free guidance scale: how strongly the base model follows the prompt (0: ignore it)",
    minimum=0.0,
    maximum=100.0,
)
STEPS = Option(
    "steps",
    str,
    "100",
    'base model steps: a count or a respacing such as "50", "ddim25", "fast27" or "10,10,3,2,2"',
    metavar="RESPACING",
    field="base_respacing",
)
UPSAMPLE_STEPS = Option(
    "upsample_steps",
    str,
    "fast27",
    "upsampler steps, written as for steps",
    metavar="RESPACING",
    field="upsample_respacing",
)
SAMPLER = Option("sampler", str, "ancestral", "base model sampler", choices=SAMPLERS, field="base_sampler")
UPSAMPLE_SAMPLER = Option(
    "upsample_sampler",
    str,
    "ddim",
    f"upsampler sampler ({INPAINT_UPSAMPLE_SAMPLER} for inpainting unless chosen)",
    choices=SAMPLERS,
)
ETA = Option(
    "eta",
    float,
    0.0,
    "DDIM eta: 0 is deterministic, 1 as noisy as ancestral steps (ddim sampler only)",
    minimum=0.0,
    maximum=1.0,
)
DYNAMIC_THRESHOLD = Option(
    "dynamic_threshold",
    float,
    0.0,
    "dynamic thresholding of the base model's predicted image, for high guidance scales: the "
    "percentile of its pixel magnitudes (e.g. 0.995) that becomes the clipping bound (0: plain clipping)",
    minimum=0.0,
    maximum=1.0,
)
UPSAMPLE_TEMP = Option(
    "upsample_temp",
    float,
    0.997,
    "scale of the upsampler's start noise (a little below 1 gives sharper pictures)",
    minimum=0.0,
    maximum=1.0,
)
NEGATIVE_PROMPT = Option(
    "negative_prompt",
    str,
    None,
    "what the picture should not show: guidance steers away from it instead of from the empty "
    "prompt (default: none, the empty prompt)",
    metavar="TEXT",
)
GUIDANCE_INTERVAL = Option(
    "guidance_interval",
    str,
    "0,1",
    'where guidance applies, "lo,hi": a part of the noise level t/T (1: the first, noisiest step; '
    "0: the last); outside it the model runs once per step, unguided",
    metavar="LO,HI",
)


@dataclass(frozen=True)
class Preset:
    """Named settings: option name -> value. A request's own fields win over its preset's, which win
    over the server's defaults."""

    name: str
    help: str
    values: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "help": self.help, "values": dict(self.values)}


# `fast` is a placeholder until the new samplers are measured: the best known few-step setting of
# the existing samplers. This is the one place to change it.
PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "reference",
            "100 ancestral base steps, then fast27 upsampler steps: the reference recipe, the default",
            {
                STEPS.name: STEPS.default,
                SAMPLER.name: SAMPLER.default,
                UPSAMPLE_STEPS.name: UPSAMPLE_STEPS.default,
            },
        ),
        Preset(
            "fast",
            "25 DDIM base steps (a quarter of the reference's), then fast27 upsampler steps",
            {STEPS.name: "25", SAMPLER.name: "ddim", UPSAMPLE_STEPS.name: UPSAMPLE_STEPS.default},
        ),
    )
}
PRESET = Option(
    "preset",
    str,
    None,
    "named settings ("
    + "; ".join(f"{p.name}: {p.help}" for p in PRESETS.values())
    + "); the request's own fields win over its preset's",
    choices=tuple(PRESETS),
)
STRENGTH = Option(
    "strength",
    float,
    0.6,
    "image-to-image: how far the picture is noised before sampling with the prompt "
    "(0: returned unchanged, 1: pure noise, text-to-image)",
    minimum=0.0,
    maximum=1.0,
)

GENERATION_OPTIONS: tuple[Option, ...] = (
    SIZE,
    BATCH_SIZE,
    SEED,
    GUIDANCE_SCALE,
    STEPS,
    UPSAMPLE_STEPS,
    SAMPLER,
    UPSAMPLE_SAMPLER,
    ETA,
    DYNAMIC_THRESHOLD,
    UPSAMPLE_TEMP,
    NEGATIVE_PROMPT,
    GUIDANCE_INTERVAL,
    PRESET,
)
# The options of one kind of request only.
IMG2IMG_OPTIONS: tuple[Option, ...] = (STRENGTH,)
ALL_OPTIONS: tuple[Option, ...] = GENERATION_OPTIONS + IMG2IMG_OPTIONS
OPTIONS: dict[str, Option] = {option.name: option for option in ALL_OPTIONS}


def default_upsample_sampler(task: str) -> str:
    """The upsampler's sampler when a request does not choose one."""
    return INPAINT_UPSAMPLE_SAMPLER if task == "inpaint" else UPSAMPLE_SAMPLER.default


def with_preset(name: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """The options a request runs with, by option name: those `given` (None: not given) over those of
    the preset `name` (None: no preset)."""
    chosen = {} if name is None else dict(PRESETS[PRESET.check(name)].values)
    return chosen | {key: value for key, value in given.items() if value is not None}


def guidance_interval(value: Any, *, name: str = GUIDANCE_INTERVAL.name) -> tuple[float, float]:
    """(lo, hi) from "lo,hi" or a pair of numbers, with 0 <= lo <= hi <= 1; else `InvalidParameter`."""
    parts = value.split(",") if isinstance(value, str) else value
    try:
        lo, hi = (float(p) if isinstance(p, str) else p for p in parts)
    except (TypeError, ValueError):
        lo = hi = None
    if not (checks.is_number(lo) and checks.is_number(hi) and 0 <= lo <= hi <= 1):
        raise InvalidParameter(
            f'{name}: must be two numbers "lo,hi" with 0 <= lo <= hi <= 1, e.g. "0.2,0.8" (got {value!r})'
        )
    return float(lo), float(hi)


WHOLE_SCHEDULE = guidance_interval(GUIDANCE_INTERVAL.default)  # guidance on every step


def seeds_from(seed: int, count: int) -> tuple[int, ...]:
    """The seeds of a batch whose first image has `seed`: seed, seed+1, … (wrapping past MAX_SEED)."""
    return tuple((seed + i) % (MAX_SEED + 1) for i in range(count))


def _int(bound: float | None) -> int | None:
    return None if bound is None else int(bound)
