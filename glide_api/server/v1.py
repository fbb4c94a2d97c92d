"""The v1 API: jobs (sync or async), progress as server-sent events, cancel, images, inpainting,
image-to-image, models and settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from apiflask import APIBlueprint
from flask import Response

from ..engine import Job
from ..errors import InvalidParameter
from ..options import ALL_OPTIONS, PRESETS, SAMPLERS
from ..pipeline.params import GenerationRequest
from .generation_request import build_request
from .idempotency import idempotent
from .job_json import job_json
from .openapi import (
    INVALID,
    NOT_FINISHED,
    NOT_FOUND,
    NOT_READY,
    STREAMS_BUSY,
    SUBMIT,
    UPLOAD_TOO_LARGE,
    WAIT,
    error_responses,
    event_stream_content,
    schema_ref,
)
from .owners import caller, may_see, owned_job
from .schemas import (
    JOB_EVENTS,
    AsyncHeaders,
    EventsHeaders,
    EventsQuery,
    GenerationIn,
    Img2ImgIn,
    InpaintIn,
    JobListOut,
    JobOut,
    ModelsOut,
    SettingsOut,
    WorkersOut,
)
from .sse import job_event_stream
from .views import event_stream, image_url, service, submit_and_wait

bp = APIBlueprint("v1", __name__, url_prefix="/v1", tag="Jobs")
ASYNC_DOC = (
    "Synchronous by default: answers 200 with the finished job. With the header "
    "`Prefer: respond-async` it answers 202 at once with the queued job (follow "
    "`/v1/jobs/{id}/events` or poll `/v1/jobs/{id}`). A synchronous request whose job still runs "
    "after `sync_timeout` seconds is answered 202 as well, and the job goes on."
)
ACCEPTED = {
    202: {
        "description": "the job was queued (`Prefer: respond-async`) or still runs after `sync_timeout`",
        "content": {"application/json": {"schema": schema_ref(JobOut)}},
        "headers": {
            "Location": {
                "description": "the job: /v1/jobs/{id}",
                "required": True,
                "schema": {"type": "string"},
            }
        },
    }
}


def _job(job: Job) -> dict[str, Any]:
    """A job as v1 shows it, with its webhook record."""
    return job_json(job, image_url, webhook=service().webhooks.describe(job.id))


def _submitter(request: GenerationRequest, webhook: str | None, events: Any) -> Callable[[], Job]:
    """Submit `request` (with its webhook, checked now, before anything is queued)."""
    hooks = service().webhooks
    subscription = hooks.subscription(webhook, events)

    def submit() -> Job:
        engine = service().engine
        job = engine.submit(request, owner=caller())
        if subscription is not None:
            hooks.watch(job, subscription, engine.get)
        return job

    return submit


def _respond(
    submit: Callable[[], Job], headers: AsyncHeaders
) -> tuple[dict[str, Any], int, dict[str, str]] | dict[str, Any]:
    """202 with the queued job (`Prefer: respond-async`) or, synchronously, 200 with the finished
    job; a job still running after `sync_timeout` is answered 202 as well, and goes on. With an
    `Idempotency-Key`, a repeated request gets its first job, answered the same way."""
    submit = idempotent(submit, headers.idempotency_key)
    if "respond-async" in headers.prefer:
        job = submit()
        headers = {"Location": f"/v1/jobs/{job.id}", "Preference-Applied": "respond-async"}
        return _job(service().engine.get(job.id)), 202, headers
    job = submit_and_wait(submit)
    if not job.done:
        return _job(job), 202, {"Location": f"/v1/jobs/{job.id}"}
    return _job(job)


@bp.post("/generations")
@bp.input(GenerationIn, arg_name="body")
@bp.input(AsyncHeaders, location="headers", arg_name="headers")
@bp.output(JobOut, status_code=200)
@bp.doc(
    summary="Generate images from a prompt",
    description=ASYNC_DOC,
    responses=ACCEPTED | error_responses(*SUBMIT, *WAIT),
)
def generations(body: GenerationIn, headers: AsyncHeaders) -> Any:
    req = build_request(service(), prompt=body.prompt, size=body.size, n=body.n, options=body)
    return _respond(_submitter(req, body.webhook, body.webhook_events), headers)


@bp.post("/inpaint")
@bp.input(InpaintIn, location="form_and_files", arg_name="form")
@bp.input(AsyncHeaders, location="headers", arg_name="headers")
@bp.output(JobOut, status_code=200)
@bp.doc(
    summary="Repaint the masked part of an image",
    description=ASYNC_DOC,
    responses=ACCEPTED | error_responses(*SUBMIT, UPLOAD_TOO_LARGE, *WAIT),
)
def inpaint(form: InpaintIn, headers: AsyncHeaders) -> Any:
    image = form.image.read() if form.image else None
    mask = form.mask.read() if form.mask else None
    req = build_request(
        service(),
        prompt=form.prompt,
        size=form.size,
        n=form.n,
        options=form,
        task="inpaint",
        image=image,
        mask=mask,
    )
    return _respond(_submitter(req, form.webhook, form.webhook_events), headers)


@bp.post("/img2img")
@bp.input(Img2ImgIn, location="form_and_files", arg_name="form")
@bp.input(AsyncHeaders, location="headers", arg_name="headers")
@bp.output(JobOut, status_code=200)
@bp.doc(
    summary="Redraw a picture from a prompt (image-to-image)",
    description="The picture is noised to `strength` (0: kept as it is, 1: pure noise, as text to "
    "image) and sampled from there with the prompt, by the text-to-image models. " + ASYNC_DOC,
    responses=ACCEPTED | error_responses(*SUBMIT, UPLOAD_TOO_LARGE, *WAIT),
)
def img2img(form: Img2ImgIn, headers: AsyncHeaders) -> Any:
    req = build_request(
        service(),
        prompt=form.prompt,
        size=form.size,
        n=form.n,
        options=form,
        task="img2img",
        image=form.image.read() if form.image else None,
        strength=form.strength,
    )
    return _respond(_submitter(req, form.webhook, form.webhook_events), headers)


@bp.get("/jobs")
@bp.output(JobListOut)
@bp.doc(
    summary="List the jobs the server holds (waiting, running, recently finished)",
    description="With API keys configured: the caller's own jobs (an admin key's: every job).",
    responses=error_responses(NOT_READY),
)
def jobs() -> dict[str, Any]:
    return {"jobs": [_job(j) for j in service().engine.list_jobs() if may_see(j)]}


@bp.get("/jobs/<job_id>")
@bp.output(JobOut)
@bp.doc(summary="A job's status, progress and images", responses=error_responses(NOT_FOUND, NOT_READY))
def job(job_id: str) -> dict[str, Any]:
    return _job(owned_job(job_id))


@bp.post("/jobs/<job_id>/cancel")
@bp.output(JobOut)
@bp.doc(
    summary="Cancel a job",
    description="A waiting job is cancelled at once, a running one within one sampling step; a "
    "finished job is answered as it is.",
    responses=error_responses(NOT_FOUND, NOT_READY),
)
def cancel(job_id: str) -> dict[str, Any]:
    owned_job(job_id)
    return _job(service().engine.cancel(job_id))


@bp.get("/jobs/<job_id>/events")
@bp.input(EventsQuery, location="query", arg_name="query")
@bp.input(EventsHeaders, location="headers", arg_name="headers")
@bp.doc(
    summary="Progress as server-sent events",
    description="The job's events from the first (a finished job's are replayed), ending with its "
    "final event. Each event's `id` is its sequence number; send `Last-Event-ID` to resume after "
    "one (at or past the final event, the stream closes at once).",
    responses={
        200: {
            "description": "an event stream, closed after the final event",
            "content": event_stream_content(
                "`queued`, `started`, `progress` events, then one final event: `succeeded`, "
                "`failed` or `cancelled`.",
                JOB_EVENTS,
                ids=True,
            ),
        },
        **error_responses(INVALID, NOT_FOUND, NOT_READY, STREAMS_BUSY),
    },
)
def events(job_id: str, query: EventsQuery, headers: EventsHeaders) -> Response:
    owned_job(job_id)
    engine = service().engine
    after = _last_event_id(headers.last_event_id)
    hooks = service().webhooks

    def start() -> Iterator[str]:
        stream = engine.subscribe(
            job_id, previews=query.previews, heartbeat=service().config.stream_heartbeat, after=after
        )
        return job_event_stream(stream, lambda job: job_json(job, image_url, webhook=hooks.describe(job.id)))

    return event_stream(start)


def _last_event_id(header: str) -> int | None:
    """The `seq` an event stream resumes after (the SSE `Last-Event-ID`); None for a fresh start."""
    text = header.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        raise InvalidParameter(
            f"Last-Event-ID: must be an event id this stream sent, a non-negative integer (got {text!r})"
        )
    return int(text)


@bp.get("/jobs/<job_id>/images/<int:index>.png")
@bp.doc(
    summary="One image of a finished job, as PNG",
    description="The PNG's `glide-api` text chunk holds every generation parameter.",
    responses={
        200: {
            "description": "the image",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(INVALID, NOT_FOUND, NOT_FINISHED, NOT_READY),
    },
)
def job_image(job_id: str, index: int) -> Response:
    engine = service().engine
    job = owned_job(job_id)
    count = len(job.result.images) if job.result else 0
    if job.result is not None and not 0 <= index < count:
        raise InvalidParameter(f"index: this job has {count} image(s) (0 to {count - 1})")
    png = engine.image(job_id, index)
    return Response(
        png,
        mimetype="image/png",
        headers={
            "Cache-Control": "private, max-age=86400, immutable",
            "Content-Disposition": f'inline; filename="glide-{job_id[:8]}-{index}.png"',
        },
    )


@bp.get("/models")
@bp.output(ModelsOut)
@bp.doc(
    summary="The loaded models, and per capability whether it is ready (as `/readyz` says)",
    tags=["Service"],
)
def models() -> dict[str, Any]:
    svc = service()
    capabilities = svc.readiness()["capabilities"]
    if not svc.ready:
        return {"ready": False, "capabilities": capabilities}
    return {"ready": True, "capabilities": capabilities, **svc.engine.pipeline.describe()}


@bp.get("/workers")
@bp.output(WorkersOut)
@bp.doc(
    summary="The workers running jobs: each one's id, host, device, models, current jobs, heartbeat",
    description="In a fleet (`--queue`), every worker whose heartbeat is current; else this process.",
    tags=["Service"],
)
def workers() -> dict[str, Any]:
    svc = service()
    if svc.fleet is not None:
        return {"mode": "fleet", "workers": svc.fleet.engine.pipeline.workers()}
    return {"mode": "single", "workers": [svc.self_as_worker()] if svc.ready else []}


@bp.get("/settings")
@bp.output(SettingsOut)
@bp.doc(
    summary="Defaults, limits and the sizes the models make",
    tags=["Service"],
    responses=error_responses(NOT_READY),
)
def settings() -> dict[str, Any]:
    svc = service()
    c = svc.config
    pipeline = svc.engine.pipeline
    steps = svc.step_defaults.get()
    defaults = {option.name: option.default for option in ALL_OPTIONS}
    defaults |= {
        "size": pipeline.default_size("text2im") if pipeline.sizes("text2im") else None,
        "steps": steps["base"],
        "upsample_steps": steps["upsample"],
    }
    return {
        "defaults": defaults,
        "limits": {
            "max_batch_size": c.max_batch_size,
            "max_prompt_chars": c.max_prompt_chars,
            "max_upload_bytes": c.max_upload_bytes,
            "max_image_pixels": c.max_image_pixels,
            "max_steps": c.max_steps,
            "max_queue": c.max_queue,
            "job_timeout": c.job_timeout,
            "rate_limit_per_minute": c.rate_limit,
        },
        "sizes": {task: pipeline.sizes(task) for task in ("text2im", "inpaint", "img2img")},
        "samplers": list(SAMPLERS),
        "presets": [preset.describe() for preset in PRESETS.values()],
        "options": [option.describe() | {"default": defaults[option.name]} for option in ALL_OPTIONS],
    }
