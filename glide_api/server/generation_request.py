"""From API fields to a `GenerationRequest`: the server's limits first, then its defaults.

A field the request gives wins; then its `preset`'s value (`glide_api.options.PRESETS`); then the
server's default. The defaults are the generation options' own (`glide_api.options`), except the
two step counts, which an operator sets (`base_steps`, `upsample_steps`) and the original routes
`POST /basemodel` and `POST /upmodel` change while the server runs: `StepDefaults` holds those.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

from ..diffusion.schedule import space_timesteps
from ..errors import InvalidParameter
from ..options import (
    DIFFUSION_STEPS,
    GUIDANCE_SCALE,
    OPTIONS,
    WHOLE_SCHEDULE,
    guidance_interval,
    seeds_from,
    with_preset,
)
from ..pipeline import images
from ..pipeline.params import BatchSettings, GenerationRequest
from ..redis_link import RedisLink
from .schemas import PROMPT_PATTERN, GlideOptions

if TYPE_CHECKING:
    from .service import Service


def respacing(value: str | int | None, name: str, *, max_steps: int) -> str | None:
    """A step count or respacing string, checked against the schedule and `max_steps`."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        kept = space_timesteps(DIFFUSION_STEPS, text)
    except ValueError as e:
        raise InvalidParameter(f"{name}: {e}") from None
    if len(kept) > max_steps:
        raise InvalidParameter(f"{name}: at most {max_steps} steps on this server (got {len(kept)})")
    return text


class StepDefaults:
    """The respacing a request gets when it names none, per model role; thread-safe.

    Changing them affects requests built afterwards only: jobs already submitted keep their settings,
    and no weights are reloaded.
    """

    def __init__(self, *, base: str, upsample: str, shared: RedisLink | None = None) -> None:
        self._lock = threading.Lock()
        self._respacing = {"base": base, "upsample": upsample}
        self._shared = shared  # a fleet's: a change on one replica holds on every replica
        BatchSettings(size=1, base_respacing=base, upsample_respacing=upsample)  # the schedule's rules

    def get(self) -> dict[str, str]:
        """{"base": …, "upsample": …}."""
        with self._lock:
            respacing = dict(self._respacing)
        if self._shared is not None:
            with self._shared.guard():
                changed = self._shared.client.hgetall(self._shared.key("step-defaults"))
            respacing |= {role.decode(): value.decode() for role, value in changed.items()}
        return respacing

    def set(self, role: str, respacing: str) -> None:
        BatchSettings(size=1, **{f"{role}_respacing": respacing})
        if self._shared is not None:
            with self._shared.guard():
                self._shared.client.hset(self._shared.key("step-defaults"), role, respacing)
            return
        with self._lock:
            self._respacing[role] = respacing


def build_request(
    service: Service,
    *,
    prompt: str,
    size: int | None,
    n: int,
    options: GlideOptions,
    task: str = "text2im",
    image: bytes | None = None,
    mask: bytes | None = None,
    strength: float | None = None,
    prompt_required: bool = True,
) -> GenerationRequest:
    """A `GenerationRequest` from API fields, within the service's limits. `prompt_required`
    False lets the prompt be empty (an OpenAI variation has none)."""
    c = service.config
    engine = service.engine_for(task)  # 503 while its models load or are missing, 400 if off
    if prompt_required and not re.search(PROMPT_PATTERN, prompt):
        raise InvalidParameter("prompt: must not be empty or only spaces")
    explicit = {name: getattr(options, name) for name in GlideOptions.model_fields if name != "preset"}
    given = with_preset(options.preset, explicit)
    # What only the preset sets, by option and by field name: its errors name the preset.
    preset_only = {name for name in given if explicit.get(name) is None}
    preset_only |= {OPTIONS[name].field for name in preset_only}
    negative_prompt = given.get("negative_prompt", "")
    for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if len(text) > c.max_prompt_chars:
            raise InvalidParameter(f"{name}: at most {c.max_prompt_chars} characters (got {len(text)})")
    if n > c.max_batch_size:
        raise InvalidParameter(f"n: at most {c.max_batch_size} images per request (got {n})")
    for name, data in (("image", image), ("mask", mask)):
        if data is not None and len(data) > c.max_upload_bytes:
            raise InvalidParameter(f"{name}: larger than {c.max_upload_bytes} bytes")
    if task in ("inpaint", "img2img") and image is None:
        raise InvalidParameter(f"image: {task} needs an image")
    if size is None:
        size = engine.pipeline.default_size(task)
    steps = service.step_defaults.get()
    try:
        chosen = {
            "base_respacing": respacing(given.get("steps"), "steps", max_steps=c.max_steps) or steps["base"],
            "upsample_respacing": respacing(
                given.get("upsample_steps"), "upsample_steps", max_steps=c.max_steps
            )
            or steps["upsample"],
            "base_sampler": given.get("sampler"),
            "upsample_sampler": given.get("upsample_sampler"),
            "eta": given.get("eta"),
            "dynamic_threshold": given.get("dynamic_threshold"),
            "upsample_temp": given.get("upsample_temp"),
            "strength": strength,
        }
        settings = BatchSettings(
            size=size, task=task, **{name: value for name, value in chosen.items() if value is not None}
        )
    except InvalidParameter as e:
        if e.param not in preset_only:
            raise
        raise InvalidParameter(f"preset: {options.preset} does not fit this server ({e})") from None
    engine.pipeline.validate(settings)  # the task's models and the size, before any upload is decoded
    if task == "inpaint":
        # Sizes from the headers first, then decode now: a bad upload is a 4xx, not a failed job.
        images.image_and_mask(image, mask, max_pixels=c.max_image_pixels)
    elif image is not None:
        images.open_image(image, max_pixels=c.max_image_pixels)
    interval = given.get("guidance_interval")
    return GenerationRequest(
        prompt=prompt,
        settings=settings,
        batch_size=n,
        guidance_scale=given.get("guidance_scale", GUIDANCE_SCALE.default),
        seeds=() if options.seed is None else seeds_from(options.seed, n),
        image=image,
        mask=mask,
        negative_prompt=negative_prompt,
        guidance_interval=WHOLE_SCHEDULE if interval is None else guidance_interval(interval),
    )
