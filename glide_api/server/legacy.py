"""The original Glide-Api routes, with their parameters and field names unchanged.

    GET  /image?size=64&prompt=...&batch_size=1&guidance_scale=3.0&upsample_temp=0.997
         (new, optional: seed, negative_prompt, guidance_interval, preset)
    POST /basemodel?diffusion_steps=50
    POST /upmodel?diffusion_steps=27

New fields are only added (seeds, each image on its own, numeric timings, the job id).
"""

from __future__ import annotations

import base64
import time
from typing import Any

from apiflask import APIBlueprint

from ..pipeline import images
from .generation_request import build_request, respacing
from .idempotency import idempotent
from .openapi import FORBIDDEN, INVALID, NOT_READY, SUBMIT, TIMED_OUT, WAIT, error_responses
from .owners import admin_only, caller
from .schemas import (
    BaseModelOut,
    DiffusionStepsQuery,
    GlideOptions,
    LegacyImageOut,
    LegacyImageQuery,
    SubmitHeaders,
    UpModelOut,
)
from .views import finished, service, submit_and_wait

bp = APIBlueprint("legacy", __name__, tag="Original Glide-Api")


@bp.get("/image")
@bp.input(LegacyImageQuery, location="query", arg_name="query")
@bp.input(SubmitHeaders, location="headers", arg_name="headers")
@bp.output(LegacyImageOut)
@bp.doc(
    summary="Generate images (the original route)",
    description="Waits for the images; a batch comes back as one PNG strip in `image`.",
    responses=error_responses(*SUBMIT, *WAIT, TIMED_OUT),
)
def image(query: LegacyImageQuery, headers: SubmitHeaders) -> dict[str, Any]:
    options = GlideOptions(
        guidance_scale=query.guidance_scale,
        upsample_temp=query.upsample_temp,
        seed=query.seed,
        negative_prompt=query.negative_prompt,
        guidance_interval=query.guidance_interval,
        preset=query.preset,
    )
    request = build_request(
        service(), prompt=_unquoted(query.prompt), size=query.size, n=query.batch_size, options=options
    )
    start = time.perf_counter()
    submit = idempotent(lambda: service().engine.submit(request, owner=caller()), headers.idempotency_key)
    job = finished(submit_and_wait(submit))
    seconds = time.perf_counter() - start
    pngs = [image.png for image in job.result.images]
    strip = (
        pngs[0] if len(pngs) == 1 else images.encode_png(images.strip([images.open_image(p) for p in pngs]))
    )
    memory = service().engine.pipeline.device_memory()
    return {
        "data_type": "image/png;base64",
        "image": base64.b64encode(strip).decode("ascii"),
        "image_size": query.size,
        "processing_time": f"{seconds} s",
        "gpu_memory_allocated": f"{memory['allocated'] / 1e9:.2f} Gb",
        "gpu_memory_reserved": f"{memory['reserved'] / 1e9:.2f} Gb",
        "images": [base64.b64encode(p).decode("ascii") for p in pngs],
        "seeds": [image.seed for image in job.result.images],
        "processing_seconds": seconds,
        "job_id": job.id,
        "chain": list(job.result.chain),
    }


def _unquoted(prompt: str) -> str:
    """The original README quotes the prompt inside the URL (prompt="mountains in the night"): one
    pair of surrounding double quotes is taken as quoting, not as part of the prompt."""
    stripped = prompt.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] == '"':
        return stripped[1:-1]
    return prompt


STEPS_DOC = (
    "Applies to jobs submitted afterwards; running jobs and weights are untouched. With API keys "
    "configured, it needs an admin key (admin_keys)."
)
STEPS_ERRORS = error_responses(FORBIDDEN, INVALID, NOT_READY)


def _set_default_steps(role: str, steps: int) -> int:
    """Make `steps` the role's default respacing, within `max_steps` like any request's; the role's
    parameter count (the original answer)."""
    max_steps = service().config.max_steps
    service().step_defaults.set(role, respacing(steps, "diffusion_steps", max_steps=max_steps))
    described = service().engine.pipeline.describe()["models"]
    return int(described[role]["parameters"]) if role in described else 0


@bp.post("/basemodel")
@admin_only
@bp.input(DiffusionStepsQuery, location="query", arg_name="query")
@bp.output(BaseModelOut)
@bp.doc(summary="Set the base model's default steps", description=STEPS_DOC, responses=STEPS_ERRORS)
def basemodel(query: DiffusionStepsQuery) -> dict[str, int]:
    return {"base_model_total_parameters": _set_default_steps("base", query.diffusion_steps)}


@bp.post("/upmodel")
@admin_only
@bp.input(DiffusionStepsQuery, location="query", arg_name="query")
@bp.output(UpModelOut)
@bp.doc(summary="Set the upsampler's default steps", description=STEPS_DOC, responses=STEPS_ERRORS)
def upmodel(query: DiffusionStepsQuery) -> dict[str, int]:
    return {"upsample_model_total_parameters": _set_default_steps("upsample", query.diffusion_steps)}
