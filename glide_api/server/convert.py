"""Between HTTP payloads and engine objects: requests in (with the configured limits), jobs out,
events as server-sent events."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from ..diffusion.schedule import space_timesteps
from ..engine import Event, Job
from ..pipeline import images
from ..pipeline.params import GenerationRequest
from .schemas import GlideOptions
from .service import Service

SSE_HEARTBEAT_SECONDS = 15.0


def respacing(value: str | int | None, name: str, *, max_steps: int) -> str | None:
    """A step count or respacing string, checked against the schedule and `max_steps`."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        kept = space_timesteps(1000, text)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    if len(kept) > max_steps:
        raise ValueError(f"{name}: at most {max_steps} steps on this server (got {len(kept)})")
    return text


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
    """A `GenerationRequest` from API fields: server limits first, then the engine's defaults."""
    c = service.config
    engine = service.engine
    if not prompt.strip():
        raise ValueError("prompt: must not be empty")
    if len(prompt) > c.max_prompt_chars:
        raise ValueError(f"prompt: at most {c.max_prompt_chars} characters (got {len(prompt)})")
    if n > c.max_batch_size:
        raise ValueError(f"n: at most {c.max_batch_size} images per request (got {n})")
    for name, data in (("image", image), ("mask", mask)):
        if data is not None and len(data) > c.max_upload_bytes:
            raise ValueError(f"{name}: larger than {c.max_upload_bytes} bytes")
    if task == "inpaint":
        if image is None:
            raise ValueError("image: inpainting needs an image")
        images.image_and_mask(image, mask)  # decode now: a bad upload is a 400, not a failed job
    if size is None:
        size = engine.pipeline.default_size(task)
    settings = engine.settings_for(
        size=size,
        task=task,
        base_respacing=respacing(options.steps, "steps", max_steps=c.max_steps),
        upsample_respacing=respacing(options.upsample_steps, "upsample_steps", max_steps=c.max_steps),
        base_sampler=options.sampler,
        upsample_sampler=options.upsample_sampler,
        eta=options.eta,
        upsample_temp=options.upsample_temp,
    )
    guidance = options.guidance_scale if options.guidance_scale is not None else 3.0
    seeds = () if options.seed is None else tuple((options.seed + i) % 2**32 for i in range(n))
    return GenerationRequest(
        prompt=prompt,
        settings=settings,
        batch_size=n,
        guidance_scale=guidance,
        seeds=seeds,
        image=image,
        mask=mask,
    )


def job_json(job: Job, image_url: Callable[[str, int], str]) -> dict[str, Any]:
    """A job as the v1 API shows it (no image bytes: each image has a URL)."""
    request = job.request
    result = job.result
    return {
        "id": job.id,
        "status": job.status,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "progress": None if job.progress is None else job.progress.to_dict(),
        "error": job.error,
        "request": {
            "prompt": request["prompt"],
            "task": request["settings"]["task"],
            "size": request["settings"]["size"],
            "batch_size": request["batch_size"],
            "guidance_scale": request["guidance_scale"],
            "seeds": request["seeds"],
            "settings": request["settings"],
        },
        "images": []
        if result is None
        else [
            {"index": i, "seed": im.seed, "url": image_url(job.id, i), "metadata": im.metadata}
            for i, im in enumerate(result.images)
        ],
        "chain": [] if result is None else list(result.chain),
        "stage_seconds": {} if result is None else dict(result.stage_seconds),
        "total_seconds": None if result is None else result.total_seconds,
        "peak_memory_bytes": None if result is None else result.peak_memory_bytes,
    }


def sse(event: str, data: dict[str, Any], *, event_id: int | None = None) -> str:
    """One server-sent event (`event:`, optional `id:`, one `data:` line of JSON)."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None and event_id >= 0 else "")
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


def job_event_stream(events: Iterator[Event], job_dict: Callable[[], dict[str, Any]]) -> Iterator[str]:
    """Engine events as SSE text; heartbeats become comments; `succeeded` carries the v1 job JSON."""
    yield ": stream open\n\n"
    for event in events:
        if event.type == "heartbeat":
            yield ": keep-alive\n\n"
            continue
        data = event.to_dict()
        if event.type == "succeeded":
            data["job"] = job_dict()
        yield sse(event.type, data, event_id=event.seq)
