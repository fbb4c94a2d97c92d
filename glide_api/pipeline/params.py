"""Validated generation parameters: what one job asks for, and what a batch shares.

A `GenerationRequest` is one job (one prompt, `batch_size` images). It is plain data: it turns into
a JSON-safe dict and back, so a job can be stored or queued anywhere. `BatchSettings` is the part
that every sample of one sampling batch must share; requests with equal settings can run as one
batch, each sample keeping its own prompt, seed and guidance scale (`Sample`).
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from .. import checks
from ..diffusion.schedule import space_timesteps
from ..errors import InvalidParameter
from ..options import (
    BATCH_SIZE,
    DIFFUSION_STEPS,
    DYNAMIC_THRESHOLD,
    ETA,
    GUIDANCE_SCALE,
    MAX_SEED,
    SAMPLER,
    SEED,
    STEPS,
    STRENGTH,
    TASKS,
    UPSAMPLE_SAMPLER,
    UPSAMPLE_STEPS,
    UPSAMPLE_TEMP,
    WHOLE_SCHEDULE,
    default_upsample_sampler,
    guidance_interval,
    seeds_from,
)

Task = Literal["text2im", "inpaint", "img2img"]
INPUT_FIELDS = ("image", "mask")  # the keys of `GenerationRequest.to_dict()` that hold uploads (base64)


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


@dataclass(frozen=True)
class BatchSettings:
    """Everything the samples of one batch share. Equal settings => the samples may share a batch.

    Samplers: the base defaults to ancestral (DDPM) steps and the upsampler to DDIM, as the
    reference notebooks; for inpainting the upsampler defaults to ancestral steps (SPEC §6.3).
    `strength` is image-to-image's only (None for the other tasks): every sample of a batch starts
    from the same step.
    """

    size: int
    task: Task = "text2im"
    base_respacing: str = STEPS.default
    upsample_respacing: str = UPSAMPLE_STEPS.default
    base_sampler: str = SAMPLER.default
    upsample_sampler: str | None = None  # None: the task's default (see above)
    eta: float = ETA.default
    dynamic_threshold: float = DYNAMIC_THRESHOLD.default
    upsample_temp: float = UPSAMPLE_TEMP.default
    strength: float | None = None  # None: STRENGTH's default for img2img
    diffusion_steps: int = field(default=DIFFUSION_STEPS, repr=False)

    def __post_init__(self) -> None:
        checks.integer("size", self.size, minimum=1)
        checks.one_of("task", self.task, TASKS)
        if self.upsample_sampler is None:
            object.__setattr__(self, "upsample_sampler", default_upsample_sampler(self.task))
        if self.task == "img2img":
            if self.strength is None:
                object.__setattr__(self, "strength", STRENGTH.default)
            STRENGTH.check(self.strength)
        elif self.strength is not None:
            raise InvalidParameter(f"strength: applies to img2img only, not to {self.task}")
        for option in (STEPS, UPSAMPLE_STEPS):
            value = getattr(self, option.field)
            if not isinstance(value, str):
                raise InvalidParameter(
                    f'{option.field}: must be a string such as "100", "fast27" or "ddim50" (got {value!r})'
                )
            try:
                space_timesteps(self.diffusion_steps, value)
            except ValueError as e:
                raise InvalidParameter(f"{option.field}: {e}") from None
        for option in (SAMPLER, UPSAMPLE_SAMPLER, ETA, DYNAMIC_THRESHOLD, UPSAMPLE_TEMP):
            option.check(getattr(self, option.field), name=option.field)
        if self.eta and "ddim" not in (self.base_sampler, self.upsample_sampler):
            raise InvalidParameter(
                "eta: applies to the ddim sampler only; choose base_sampler or upsample_sampler ddim"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Sample:
    """One image to make: its prompt, its seed, its guidance (and, for inpainting and image-to-image,
    its inputs).

    Guidance: `negative_prompt` is what the unguided branch sees (the empty prompt by default);
    `guidance_interval` (lo, hi) the noise levels t/T where guidance applies (see
    `classifier_free_guidance`). `image` and `mask` are encoded image files (PNG/JPEG bytes). The
    mask is white (or opaque) where pixels are kept and black (or transparent) where the model
    paints; without a mask the image's alpha channel is the mask. Image-to-image takes no mask.
    """

    prompt: str
    seed: int
    guidance_scale: float = GUIDANCE_SCALE.default
    image: bytes | None = field(default=None, repr=False)
    mask: bytes | None = field(default=None, repr=False)
    negative_prompt: str = ""
    guidance_interval: tuple[float, float] = WHOLE_SCHEDULE


@dataclass(frozen=True)
class GenerationRequest:
    """One job: `batch_size` images of one prompt. Seeds are drawn at random where not given."""

    prompt: str
    settings: BatchSettings
    batch_size: int = BATCH_SIZE.default
    guidance_scale: float = GUIDANCE_SCALE.default
    seeds: tuple[int, ...] = ()
    image: bytes | None = field(default=None, repr=False)
    mask: bytes | None = field(default=None, repr=False)
    negative_prompt: str = ""
    guidance_interval: tuple[float, float] = WHOLE_SCHEDULE

    def __post_init__(self) -> None:
        for name in ("prompt", "negative_prompt"):
            if not isinstance(getattr(self, name), str):
                raise InvalidParameter(f"{name}: must be text, got {type(getattr(self, name)).__name__}")
        object.__setattr__(self, "guidance_interval", guidance_interval(self.guidance_interval))
        checks.integer("batch_size", self.batch_size, minimum=1)
        checks.number("guidance_scale", self.guidance_scale)
        seeds = tuple(self.seeds)
        for seed in seeds:
            SEED.check(seed, name="seeds")
        if seeds and len(seeds) != self.batch_size:
            raise InvalidParameter(f"seeds: give one per image ({self.batch_size}), got {len(seeds)}")
        if not seeds:
            seeds = tuple(random_seed() for _ in range(self.batch_size))
        object.__setattr__(self, "seeds", seeds)
        task = self.settings.task
        if task in ("inpaint", "img2img") and self.image is None:
            raise InvalidParameter(f"image: {task} needs an image")
        if task == "text2im" and (self.image is not None or self.mask is not None):
            raise InvalidParameter("image: text2im takes no image (inpaint and img2img do)")
        if task == "img2img" and self.mask is not None:
            raise InvalidParameter("mask: img2img takes no mask (inpaint does)")

    @classmethod
    def create(
        cls,
        prompt: str,
        *,
        size: int,
        batch_size: int = BATCH_SIZE.default,
        seed: int | None = None,
        guidance_scale: float = GUIDANCE_SCALE.default,
        image: bytes | None = None,
        mask: bytes | None = None,
        negative_prompt: str = "",
        guidance_interval: tuple[float, float] | str = WHOLE_SCHEDULE,
        **settings: Any,
    ) -> GenerationRequest:
        """Convenience: `seed` gives seeds seed, seed+1, … for the batch; other keywords are settings."""
        seeds = () if seed is None else seeds_from(seed, batch_size)
        return cls(
            prompt=prompt,
            settings=BatchSettings(size=size, **settings),
            batch_size=batch_size,
            guidance_scale=guidance_scale,
            seeds=seeds,
            image=image,
            mask=mask,
            negative_prompt=negative_prompt,
            guidance_interval=guidance_interval,
        )

    def samples(self) -> list[Sample]:
        return [
            Sample(
                prompt=self.prompt,
                seed=s,
                guidance_scale=self.guidance_scale,
                image=self.image,
                mask=self.mask,
                negative_prompt=self.negative_prompt,
                guidance_interval=self.guidance_interval,
            )
            for s in self.seeds
        ]

    # ---- plain data ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (image bytes as base64)."""
        return {
            "prompt": self.prompt,
            "settings": self.settings.to_dict(),
            "batch_size": self.batch_size,
            "guidance_scale": self.guidance_scale,
            "seeds": list(self.seeds),
            "image": _b64(self.image),
            "mask": _b64(self.mask),
            "negative_prompt": self.negative_prompt,
            "guidance_interval": list(self.guidance_interval),
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> GenerationRequest:
        """The request that reproduces one image, from the parameters stored in its PNG."""
        names = {f.name for f in dataclasses.fields(BatchSettings)}
        settings = BatchSettings(**{k: v for k, v in metadata.items() if k in names})
        return cls(
            prompt=metadata["prompt"],
            settings=settings,
            guidance_scale=metadata["guidance_scale"],
            seeds=(metadata["seed"],),
            **_guidance_of(metadata),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        return cls(
            prompt=data["prompt"],
            settings=BatchSettings(**data["settings"]),
            batch_size=data["batch_size"],
            guidance_scale=data["guidance_scale"],
            seeds=tuple(data["seeds"]),
            image=_unb64(data.get("image")),
            mask=_unb64(data.get("mask")),
            **_guidance_of(data),
        )


def _guidance_of(data: dict[str, Any]) -> dict[str, Any]:
    """The guidance controls stored in `data` (a request or image metadata from before they existed
    has none: the defaults)."""
    return {
        "negative_prompt": data.get("negative_prompt", ""),
        "guidance_interval": tuple(data.get("guidance_interval", WHOLE_SCHEDULE)),
    }


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)
