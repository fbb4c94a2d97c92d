"""OpenAI's Images API, as the official `openai` client sends it (base_url=http://HOST:PORT/v1).

    POST /v1/images/generations   JSON
    POST /v1/images/edits         multipart: image (or image[]), optional mask, prompt, n, size, …
    POST /v1/images/variations    multipart: image, n, size, response_format

GLIDE's own knobs (seed, guidance_scale, steps, upsample_steps, sampler, upsample_temp,
negative_prompt, guidance_interval, preset; strength for variations) ride along as extra body
fields (`extra_body=` in the client). `stream=true` sends server-sent events that the client parses
into `image_generation.partial_image` / `.completed` (`image_edit.*` for edits).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from apiflask import APIBlueprint
from flask import request, url_for

from ..engine import Event, Job, Succeeded
from ..errors import InvalidParameter
from ..options import STRENGTH
from ..pipeline.params import GenerationRequest
from .generation_request import build_request
from .idempotency import idempotent
from .openapi import (
    STREAMS_BUSY,
    SUBMIT,
    TIMED_OUT,
    UPLOAD_TOO_LARGE,
    WAIT,
    error_responses,
    event_stream_content,
)
from .owners import caller
from .schemas import (
    OpenAIImageFields,
    OpenAIImageOptions,
    OpenAIImagesEditIn,
    OpenAIImagesGenerateIn,
    OpenAIImagesOut,
    OpenAIImagesVariationIn,
    SubmitHeaders,
    openai_events,
)
from .sse import KEEP_ALIVE, sse
from .views import event_stream, finished, service, submit_and_wait

bp = APIBlueprint("openai", __name__, url_prefix="/v1/images", tag="OpenAI Images API")
_SIZE = re.compile(r"^\s*(\d+)\s*(?:x\s*(\d+))?\s*$")


def _size(value: str | None, task: str) -> int | None:
    """ "256x256" (or "256") -> 256; None or "auto" -> the default size."""
    if value is None or value.strip().lower() == "auto":
        return None
    match = _SIZE.match(value)
    if match is None or (match.group(2) and match.group(1) != match.group(2)):
        sizes = ", ".join(f"{s}x{s}" for s in service().engine_for(task).pipeline.sizes(task))
        raise InvalidParameter(
            f"size: must be a square size these models make ({sizes}) or auto (got {value!r})"
        )
    return int(match.group(1))


def _generate(
    body: OpenAIImageOptions,
    headers: SubmitHeaders,
    *,
    task: str,
    kind: str,
    image: bytes | None = None,
    mask: bytes | None = None,
) -> Any:
    """Check and submit the request (once per `Idempotency-Key`), then answer with events
    (`stream`) or with the finished job."""
    size = _size(body.size, task)
    req = build_request(
        service(),
        prompt=body.prompt,
        size=size,
        n=body.n or 1,
        options=body,
        task=task,
        image=image,
        mask=mask,
    )
    engine = service().engine
    submit = _submitter(req, headers)
    if body.stream:
        partial_images = body.partial_images or 0

        def start() -> Iterator[str]:
            job = submit()
            # Subscribed now, not when the body is first read: the subscription holds the job.
            events = engine.subscribe(
                job.id, previews=partial_images > 0, heartbeat=service().config.stream_heartbeat
            )
            return _event_stream(events, job, kind=kind, partial_images=partial_images)

        return event_stream(start)
    return _answer(body, finished(submit_and_wait(submit)))


def _submitter(req: GenerationRequest, headers: SubmitHeaders) -> Callable[[], Job]:
    """Submit `req`, once per `Idempotency-Key`."""
    return idempotent(lambda: service().engine.submit(req, owner=caller()), headers.idempotency_key)


def _answer(body: OpenAIImageFields, done: Job) -> dict[str, Any]:
    size = done.request["settings"]["size"]
    data = []
    for i, image in enumerate(done.result.images):
        if body.response_format == "url":
            data.append({"url": url_for("v1.job_image", job_id=done.id, index=i, _external=True)})
        else:
            data.append({"b64_json": base64.b64encode(image.png).decode("ascii")})
    return {
        "created": int(done.finished_at or time.time()),
        "data": data,
        "size": f"{size}x{size}",
        "output_format": "png",
    }


def _streamed(kind: str) -> dict[str, Any]:
    """The 200 answer: the images as JSON, or with `stream=true` as server-sent events."""
    return {
        "description": "the images (JSON), or with `stream=true` server-sent events",
        "content": event_stream_content(
            f"`{kind}.partial_image` previews, one `{kind}.completed` per image; or an `error`.",
            openai_events(kind),
            ids=False,
        ),
    }


@bp.post("/generations")
@bp.input(OpenAIImagesGenerateIn, arg_name="body")
@bp.input(SubmitHeaders, location="headers", arg_name="headers")
@bp.output(OpenAIImagesOut)
@bp.doc(
    summary="Create images (OpenAI Images API)",
    description="`response_format` b64_json (default) or url; `stream=true` answers with events.",
    responses={
        200: _streamed("image_generation"),
        **error_responses(*SUBMIT, *WAIT, TIMED_OUT, STREAMS_BUSY),
    },
)
def generations(body: OpenAIImagesGenerateIn, headers: SubmitHeaders) -> Any:
    return _generate(body, headers, task="text2im", kind="image_generation")


@bp.post("/edits")
@bp.input(OpenAIImagesEditIn, location="form_and_files", arg_name="body")
@bp.input(SubmitHeaders, location="headers", arg_name="headers")
@bp.output(OpenAIImagesOut)
@bp.doc(
    summary="Edit an image (OpenAI Images API)",
    description="The mask's transparent pixels mark the area to paint; without a mask, the image's "
    "own transparency does. Send `image` or `image[]` (the first image is used).",
    responses={
        200: _streamed("image_edit"),
        **error_responses(*SUBMIT, UPLOAD_TOO_LARGE, *WAIT, TIMED_OUT, STREAMS_BUSY),
    },
)
def edits(body: OpenAIImagesEditIn, headers: SubmitHeaders) -> Any:
    upload = body.image or next(iter(request.files.getlist("image[]")), None)
    if upload is None:
        raise InvalidParameter("image: an image file is required (multipart field image or image[])")
    image = upload.read()
    mask = body.mask.read() if body.mask else None
    return _generate(body, headers, task="inpaint", kind="image_edit", image=image, mask=mask)


@bp.post("/variations")
@bp.input(OpenAIImagesVariationIn, location="form_and_files", arg_name="body")
@bp.input(SubmitHeaders, location="headers", arg_name="headers")
@bp.output(OpenAIImagesOut)
@bp.doc(
    summary="Variations of an image (OpenAI Images API)",
    description="Image-to-image from the picture with an empty prompt, unguided, at `strength` "
    f"(default {STRENGTH.default}): pictures like it, different in their details. GLIDE's `prompt` "
    "and `strength` may be added.",
    responses=error_responses(*SUBMIT, UPLOAD_TOO_LARGE, *WAIT, TIMED_OUT),
)
def variations(body: OpenAIImagesVariationIn, headers: SubmitHeaders) -> Any:
    if body.image is None:
        raise InvalidParameter("image: an image file is required (multipart field image)")
    req = build_request(
        service(),
        prompt=body.prompt,
        size=_size(body.size, "img2img"),
        n=body.n or 1,
        options=body,
        task="img2img",
        image=body.image.read(),
        strength=body.strength,
        prompt_required=False,
    )
    return _answer(body, finished(submit_and_wait(_submitter(req, headers))))


def _event_stream(events: Iterator[Event], job: Job, *, kind: str, partial_images: int) -> Iterator[str]:
    """Partial images at evenly spread points of the run, then one completed event per image."""
    size = job.request["settings"]["size"]
    common = {"background": "opaque", "output_format": "png", "quality": "auto", "size": f"{size}x{size}"}
    sent = 0
    for event in events:
        if event.type == "heartbeat":
            yield KEEP_ALIVE
        elif event.type == "progress" and sent < partial_images and event.preview:
            at = event.progress
            done = (at.stage_index + at.step / at.total) / at.stages
            if done >= (sent + 1) / (partial_images + 1):
                yield sse(
                    f"{kind}.partial_image",
                    {
                        "type": f"{kind}.partial_image",
                        "b64_json": event.preview,
                        "partial_image_index": sent,
                        "created_at": int(time.time()),
                        **common,
                    },
                )
                sent += 1
        elif isinstance(event, Succeeded):
            usage = {
                "input_tokens": 0,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
                "output_tokens": 0,
                "total_tokens": 0,
            }
            # From the event, not a lookup: the job may be evicted by now.
            result = event.snapshot.result if event.snapshot else None
            for image in result.images if result else ():
                png = image.png
                yield sse(
                    f"{kind}.completed",
                    {
                        "type": f"{kind}.completed",
                        "b64_json": base64.b64encode(png).decode("ascii"),
                        "created_at": int(time.time()),
                        "usage": usage,
                        **common,
                    },
                )
        elif event.type in ("failed", "cancelled"):
            message = event.to_dict().get("message") or f"job {job.id} was cancelled"
            yield sse("error", error_body(message))


def error_body(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": "job_failed"}}
