"""From API fields to a `GenerationRequest`: the server's limits first, then its defaults.

The defaults are the generation options' own (`glide_api.options`), except the two step counts,
which an operator sets (`base_steps`, `upsample_steps`) and the original routes `POST /basemodel`
and `POST /upmodel` change while the server runs: `StepDefaults` holds those.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

from ..diffusion.schedule import space_timesteps
from ..errors import InvalidParameter
from ..options import DIFFUSION_STEPS, GUIDANCE_SCALE, seeds_from
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
) -> GenerationRequest:
    """A `GenerationRequest` from API fields, within the service's limits."""
    c = service.config
    engine = service.engine_for(task)  # 503 while its models load or are missing, 400 if off
    if not re.search(PROMPT_PATTERN, prompt):
        raise InvalidParameter("prompt: must not be empty or only spaces")
    if len(prompt) > c.max_prompt_chars:
        raise InvalidParameter(f"prompt: at most {c.max_prompt_chars} characters (got {len(prompt)})")
    if n > c.max_batch_size:
        raise InvalidParameter(f"n: at most {c.max_batch_size} images per request (got {n})")
    for name, data in (("image", image), ("mask", mask)):
        if data is not None and len(data) > c.max_upload_bytes:
            raise InvalidParameter(f"{name}: larger than {c.max_upload_bytes} bytes")
    if task == "inpaint" and image is None:
        raise InvalidParameter("image: inpainting needs an image")
    if size is None:
        size = engine.pipeline.default_size(task)
    steps = service.step_defaults.get()
    chosen = {
        "base_respacing": respacing(options.steps, "steps", max_steps=c.max_steps) or steps["base"],
        "upsample_respacing": respacing(options.upsample_steps, "upsample_steps", max_steps=c.max_steps)
        or steps["upsample"],
        "base_sampler": options.sampler,
        "upsample_sampler": options.upsample_sampler,
        "eta": options.eta,
        "dynamic_threshold": options.dynamic_threshold,
        "upsample_temp": options.upsample_temp,
    }
    settings = BatchSettings(
        size=size, task=task, **{name: value for name, value in chosen.items() if value is not None}
    )
    engine.pipeline.validate(settings)  # the task's models and the size, before any upload is decoded
    if image is not None:
        # Sizes from the headers first, then decode now: a bad upload is a 4xx, not a failed job.
        images.image_and_mask(image, mask, max_pixels=c.max_image_pixels)
    guidance = options.guidance_scale if options.guidance_scale is not None else GUIDANCE_SCALE.default
    return GenerationRequest(
        prompt=prompt,
        settings=settings,
        batch_size=n,
        guidance_scale=guidance,
        seeds=() if options.seed is None else seeds_from(options.seed, n),
        image=image,
        mask=mask,
    )
