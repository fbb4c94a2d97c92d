"""Request and response models of the HTTP APIs (pydantic v2), as the OpenAPI document shows them.

Static bounds live here. Bounds an operator configures (prompt length, images per request, steps)
are checked in `generation_request.py` against the running configuration, with the same error
shape; a field names its setting with `configured(...)`, and the document states the bound as this
server has it (`openapi.py` fills it in).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args, get_type_hints

from apiflask.fields import UploadFile
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from ..options import (
    BATCH_SIZE,
    DIFFUSION_STEPS,
    DYNAMIC_THRESHOLD,
    ETA,
    GUIDANCE_INTERVAL,
    GUIDANCE_SCALE,
    NEGATIVE_PROMPT,
    PRESET,
    PRESETS,
    SAMPLER,
    SAMPLERS,
    SEED,
    SIZE,
    STEPS,
    STRENGTH,
    UPSAMPLE_SAMPLER,
    UPSAMPLE_STEPS,
    UPSAMPLE_TEMP,
    WHOLE_SCHEDULE,
    Option,
)
from ..progress import StepProgress
from ..webhooks.targets import MAX_URL_CHARS
from .job_webhooks import EVENTS as WEBHOOK_EVENTS

SamplerName = Literal[SAMPLERS]
PresetName = Literal[tuple(PRESETS)]
# OpenAPI keyword -> the ServiceConfig setting whose value it takes in this server's document.
CONFIGURED = "x-configured"
# The prompt rule: some text that is not only spaces, at most `max_prompt_chars` characters.
# `build_request` checks it for every route; the schema states the same rule.
PROMPT_PATTERN = r"\S"
Steps = str | int  # a step count (50) or a respacing string ("50", "fast27", "ddim25", "10,10,3,2,2")
# [lo, hi] (JSON) or "lo,hi" (JSON, forms, queries), as the schema states; `build_request` checks
# it (`options.guidance_interval`), with one message naming the field for every way it can be wrong.
Interval = Annotated[
    list[Any] | str,
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "array",
                    "items": {"type": "number", "minimum": 0, "maximum": 1},
                    "minItems": 2,
                    "maxItems": 2,
                },
                {"type": "string", "pattern": r"^\s*[0-9.]+\s*,\s*[0-9.]+\s*$"},
            ]
        }
    ),
]
NO_DEFAULT: Any = None


def configured(**bounds: str) -> dict[str, Any]:
    """`json_schema_extra` for a field bounded by settings, e.g. `configured(maximum="max_steps")`."""
    return {CONFIGURED: bounds}


def prompt_field(description: str = "what to draw") -> Any:
    """The prompt, with its rule stated in the schema (checked by `build_request`, which names it)."""
    return Field(
        description=f"{description}: not only spaces, at most `max_prompt_chars` characters",
        json_schema_extra={
            "minLength": 1,
            "pattern": PROMPT_PATTERN,
            **configured(maxLength="max_prompt_chars"),
        },
    )


def option_field(option: Option, default: Any = NO_DEFAULT, **extra: Any) -> Any:
    """A pydantic field for a generation option: its range and help from `glide_api.options`.
    Absent fields are None (the server's default applies) unless `default` is given."""
    shown = "" if option.default is None else f" (default: {option.default})"
    return Field(
        default,
        ge=option.minimum if option.kind is not str else None,
        le=option.maximum if option.kind is not str else None,
        description=option.help + shown,
        **extra,
    )


class GlideOptions(BaseModel):
    """GLIDE's knobs, shared by every generation endpoint (all optional: server defaults apply)."""

    seed: int | None = option_field(SEED)
    guidance_scale: float | None = option_field(GUIDANCE_SCALE)
    steps: Steps | None = option_field(STEPS)
    upsample_steps: Steps | None = option_field(UPSAMPLE_STEPS)
    sampler: SamplerName | None = option_field(SAMPLER)
    upsample_sampler: SamplerName | None = option_field(UPSAMPLE_SAMPLER)
    eta: float | None = option_field(ETA)
    dynamic_threshold: float | None = option_field(DYNAMIC_THRESHOLD)
    upsample_temp: float | None = option_field(UPSAMPLE_TEMP)
    negative_prompt: str | None = option_field(
        NEGATIVE_PROMPT, json_schema_extra=configured(maxLength="max_prompt_chars")
    )
    guidance_interval: Interval | None = option_field(GUIDANCE_INTERVAL)
    preset: PresetName | None = option_field(PRESET)


# ---- v1 --------------------------------------------------------------------------------------------


# JSON bodies are taken as the document types them (strict: no `false` for a number, no "2" for an
# integer); forms and queries, all text on the wire, are converted.
WebhookEvent = Literal[WEBHOOK_EVENTS]
WEBHOOK_HELP = (
    "an http(s) URL that gets a signed POST (Standard Webhooks) for the job's events; needs the "
    "server's webhook_secret; see docs/webhooks.md"
)
EVENTS_HELP = (
    "which events go to `webhook`: `completed` (once, at the final status; the default), `all`, or "
    "statuses (queued, running, succeeded, failed, cancelled)"
)


class GenerationIn(GlideOptions):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = prompt_field()
    size: int | None = option_field(SIZE)
    n: int = option_field(
        BATCH_SIZE, BATCH_SIZE.default, json_schema_extra=configured(maximum="max_batch_size")
    )
    webhook: str | None = Field(None, description=WEBHOOK_HELP, max_length=MAX_URL_CHARS)
    webhook_events: list[WebhookEvent] | None = Field(None, min_length=1, description=EVENTS_HELP)


class _UploadIn(GlideOptions):
    """Multipart form: a picture and the prompt."""

    image: UploadFile = Field(description="the picture (PNG, JPEG, WebP); a non-square one is centre-cropped")
    prompt: str = prompt_field()
    size: int | None = option_field(SIZE)
    n: int = option_field(
        BATCH_SIZE, BATCH_SIZE.default, json_schema_extra=configured(maximum="max_batch_size")
    )
    webhook: str | None = Field(None, description=WEBHOOK_HELP, max_length=MAX_URL_CHARS)
    webhook_events: str | None = Field(None, description=EVENTS_HELP + "; comma-separated")


class InpaintIn(_UploadIn):
    """Multipart form: the image, an optional mask (white/opaque = keep, black/transparent = paint;
    without it the image's transparency is the mask), and the prompt."""

    mask: UploadFile | None = Field(None, description="keep-mask of the image's size")


class Img2ImgIn(_UploadIn):
    """Multipart form: the picture to start from, the prompt, and how far to depart from it."""

    strength: float | None = option_field(STRENGTH)


class ImageOut(BaseModel):
    index: int
    seed: int
    url: str = Field(description="the PNG (with its generation parameters in a text chunk)")
    metadata: dict[str, Any]


class JobRequestOut(BaseModel):
    prompt: str
    task: str
    size: int
    batch_size: int
    guidance_scale: float
    negative_prompt: str = ""
    guidance_interval: list[float] = Field(default=list(WHOLE_SCHEDULE), description="[lo, hi]")
    seeds: list[int]
    settings: dict[str, Any]


class WebhookAttemptOut(BaseModel):
    id: str = Field(description="the delivery's `webhook-id`, the same for each of its attempts")
    event: str = Field(description="the payload's `type`, e.g. `job.succeeded`")
    attempt: int = Field(description="1 for the first attempt")
    at: float
    status: int | None = Field(description="the receiver's HTTP status; null when none came")
    error: str | None
    outcome: Literal["delivered", "retrying", "failed", "gone"]
    next_attempt_at: float | None = None


class WebhookOut(BaseModel):
    url: str
    events: list[str]
    deliveries: list[WebhookAttemptOut] = Field(description="every attempt so far, oldest first")


class JobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: StepProgress | None = None
    error: str | None = None
    request: JobRequestOut
    images: list[ImageOut] = []
    chain: list[str] = []
    stage_seconds: dict[str, float] = {}
    total_seconds: float | None = None
    peak_memory_bytes: int | None = None
    webhook: WebhookOut | None = Field(None, description="its webhook and delivery attempts, if it has one")


# The v1 event stream's `data` by event type (`engine/events.py`'s `to_dict()`).
class EventData(BaseModel):
    type: str
    job_id: str
    seq: int = Field(description="the event's place in the job's history, also its SSE `id`")


class QueuedEvent(EventData):
    """The job waits; `position` 1 runs next (sent again as the queue moves)."""

    type: Literal["queued"]
    position: int


class StartedEvent(EventData):
    """The job started running."""

    type: Literal["started"]


# The progress fields stand beside `elapsed` and `preview`, as `Progress.to_dict()` flattens them.
ProgressEvent = create_model(
    "ProgressEvent",
    __base__=EventData,
    __doc__="A sampling step finished.",
    type=(Literal["progress"], ...),
    **{name: (kind, ...) for name, kind in get_type_hints(StepProgress).items()},
    elapsed=(float, Field(description="seconds since the job started")),
    preview=(
        str | None,
        Field(None, description="with `previews=true`, every `preview_every` steps: a base64 PNG"),
    ),
)


class SucceededEvent(EventData):
    """Final: the finished job, as `GET /v1/jobs/{id}` shows it."""

    type: Literal["succeeded"]
    job: JobOut


class FailedEvent(EventData):
    """Final: the job failed (or the server stopped); `message` says why."""

    type: Literal["failed"]
    message: str


class CancelledEvent(EventData):
    """Final: the job was cancelled."""

    type: Literal["cancelled"]


JOB_EVENTS: dict[str, type[BaseModel]] = {
    get_args(model.model_fields["type"].annotation)[0]: model
    for model in (QueuedEvent, StartedEvent, ProgressEvent, SucceededEvent, FailedEvent, CancelledEvent)
}


class JobListOut(BaseModel):
    jobs: list[JobOut]


class EventsQuery(BaseModel):
    previews: bool = Field(False, description="include base64 PNG previews in progress events")


class ModelsOut(BaseModel):
    ready: bool
    capabilities: dict[str, dict[str, Any]] = Field(
        default={}, description="text2im and inpaint: each one's status, as `/readyz` gives it"
    )
    device: str | None = None
    precision: str | None = None
    batch_invariant: bool | None = None
    models: dict[str, dict[str, Any]] = {}


class WorkerOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    host: str
    pid: int
    device: str | None = None
    models: dict[str, dict[str, Any]] = {}
    capabilities: dict[str, dict[str, Any]] = Field(
        default={}, description="per task it serves: sizes, default_size, diffusion_steps, models"
    )
    current_jobs: list[str] = Field(default=[], description="the ids of the jobs it runs now")
    started_at: float
    heartbeat_at: float = Field(description="its last heartbeat (epoch seconds)")


class WorkersOut(BaseModel):
    mode: str = Field(description="`fleet` (jobs shared through Redis) or `single` (this process runs them)")
    workers: list[WorkerOut]


class OptionOut(BaseModel):
    name: str
    type: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: list[str] | None = None
    help: str


class PresetOut(BaseModel):
    name: str
    help: str
    values: dict[str, Any] = Field(description="option name -> value; a request's own fields win")


class SettingsOut(BaseModel):
    defaults: dict[str, Any] = Field(description="each option's value when a request leaves it out")
    limits: dict[str, Any]
    sizes: dict[str, list[int]]
    samplers: list[str]
    presets: list[PresetOut] = Field(description="named settings, the `preset` field's choices")
    options: list[OptionOut] = Field(description="every generation option: type, range, help")


class ErrorBody(BaseModel):
    message: str = Field(description='the rule broken, naming what broke it ("prompt: must not be empty")')
    type: str = Field(description="invalid_request_error, rate_limit_error or server_error")
    param: str | None = Field(description="the field, header or file at fault, if one is")
    code: str | None = Field(description="what happened, for programs; each response lists its codes")
    job_id: str | None = Field(None, description="errors about one job (a synchronous request's): its id")


class ErrorOut(BaseModel):
    """An error: what a failing route answers (`server/errors.py`), and a stream's `error` event."""

    error: ErrorBody


# Request headers: APIFlask hands them over as `last_event_id` and the like; the document names them
# as they are sent (the alias).
IDEMPOTENCY_KEY_CHARS = 255


def _idempotency_key_schema(schema: dict[str, Any]) -> None:
    """A string of 1 to `IDEMPOTENCY_KEY_CHARS` printable ASCII characters, not only spaces (a header
    is sent or not: never null)."""
    schema.pop("anyOf", None)
    schema.pop("default", None)
    schema.update(type="string", maxLength=IDEMPOTENCY_KEY_CHARS, pattern="^[ -~]*[!-~][ -~]*$")


class SubmitHeaders(BaseModel):
    """The headers of every submitting route."""

    model_config = ConfigDict(populate_by_name=True)

    idempotency_key: str | None = Field(
        None,
        alias="Idempotency-Key",
        description="at most one job per key and caller within `idempotency_ttl` seconds: the same "
        "key with the same request (route, query and body) gets that job again, answered as the "
        "first time, with `Idempotent-Replayed: true`; with another request it is a 422 "
        "(`idempotency_key_reused`), as it is once the key's job is no longer kept",
        json_schema_extra=_idempotency_key_schema,
    )


class AsyncHeaders(SubmitHeaders):
    prefer: str = Field(
        "", alias="Prefer", description="`respond-async`: answer 202 at once with the queued job"
    )


class EventsHeaders(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    last_event_id: str = Field(
        "",
        alias="Last-Event-ID",
        description="resume after this event (the `id` of the last event received)",
        json_schema_extra={"pattern": "^[0-9]*$"},
    )


class ReadinessOut(BaseModel):
    """`/readyz`. While not ready: `reason`, and what is missing or loading."""

    model_config = ConfigDict(extra="allow")

    ready: bool
    reason: str | None = Field(None, description="why not ready")
    stopping: bool | None = Field(None, description="true once the server is shutting down")


# ---- the original Glide-Api routes ---------------------------------------------------------------


class LegacyImageQuery(BaseModel):
    size: int = Field(description="64, 128, 256, 512 or 1024 with the official models")
    prompt: str = prompt_field(
        'what to draw (one pair of surrounding double quotes is dropped, as in "a fox")'
    )
    batch_size: int = option_field(
        BATCH_SIZE, BATCH_SIZE.default, json_schema_extra=configured(maximum="max_batch_size")
    )
    guidance_scale: float = option_field(GUIDANCE_SCALE, GUIDANCE_SCALE.default)
    upsample_temp: float = option_field(UPSAMPLE_TEMP, UPSAMPLE_TEMP.default)
    seed: int | None = option_field(SEED)
    negative_prompt: str | None = option_field(
        NEGATIVE_PROMPT, json_schema_extra=configured(maxLength="max_prompt_chars")
    )
    guidance_interval: str | None = option_field(GUIDANCE_INTERVAL)
    preset: PresetName | None = option_field(PRESET)


class LegacyImageOut(BaseModel):
    data_type: str = "image/png;base64"
    image: str = Field(description="base64 PNG; a batch is one horizontal strip")
    image_size: int
    processing_time: str = Field(description='e.g. "2.21875 s"')
    gpu_memory_allocated: str = Field(description='e.g. "1.72 Gb"')
    gpu_memory_reserved: str
    images: list[str] = Field(description="each image as its own base64 PNG (with metadata)")
    seeds: list[int]
    processing_seconds: float
    job_id: str
    chain: list[str]


class DiffusionStepsQuery(BaseModel):
    diffusion_steps: int = Field(
        ge=1,
        le=DIFFUSION_STEPS,
        description="steps for jobs submitted from now on, at most `max_steps`",
        json_schema_extra=configured(maximum="max_steps"),
    )


class BaseModelOut(BaseModel):
    base_model_total_parameters: int


class UpModelOut(BaseModel):
    upsample_model_total_parameters: int


# ---- OpenAI Images API ---------------------------------------------------------------------------


class OpenAIImageFields(GlideOptions):
    """The fields of every OpenAI images route; `model` and `user` are accepted and ignored (there
    is one GLIDE)."""

    model_config = ConfigDict(extra="ignore")

    n: int | None = Field(
        1, ge=1, description="images to make", json_schema_extra=configured(maximum="max_batch_size")
    )
    size: str | None = Field(None, description='"256x256" (square sizes the models make) or "auto"')
    response_format: Literal["b64_json", "url"] | None = Field(None, description="default b64_json")
    model: str | None = None
    user: str | None = None


class OpenAIImageOptions(OpenAIImageFields):
    """OpenAI's fields of the prompted routes; `quality`, `style`, `background`, `output_format`,
    `moderation` and `output_compression` are accepted and ignored as well."""

    prompt: str = prompt_field()
    stream: bool | None = Field(False, description="send server-sent events")
    partial_images: int | None = Field(0, ge=0, le=3, description="partial images to stream (0–3)")
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    output_format: str | None = None
    moderation: str | None = None
    output_compression: int | None = None


class OpenAIImagesGenerateIn(OpenAIImageOptions):
    model_config = ConfigDict(extra="ignore", strict=True)


class OpenAIImagesEditIn(OpenAIImageOptions):
    """Multipart: `image` (or `image[]`), optional `mask` whose transparent pixels mark the area to
    paint (without it, the image's own transparency), and the fields above as form values."""

    image: UploadFile | None = None
    mask: UploadFile | None = None


class OpenAIImagesVariationIn(OpenAIImageFields):
    """Multipart: `image`, and the fields above as form values. A variation is image-to-image from
    the picture with an empty prompt (unguided) at `strength` (docs/api.md); GLIDE's own `prompt`
    may steer it."""

    image: UploadFile | None = None
    prompt: str = Field("", description="GLIDE's own: a prompt to steer the variation (default: none)")
    strength: float | None = option_field(STRENGTH)


class OpenAIImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class OpenAIImagesOut(BaseModel):
    created: int
    data: list[OpenAIImageData]
    size: str = Field(description='e.g. "256x256"')
    output_format: Literal["png"]


class OpenAIImageEvent(BaseModel):
    type: str = Field(description="the event's type")
    b64_json: str = Field(description="a PNG, base64")
    created_at: int
    size: str
    quality: str
    background: str
    output_format: str


class OpenAIPartialImageEvent(OpenAIImageEvent):
    """A preview of the first image, at evenly spread points of the run (`partial_images` of them)."""

    partial_image_index: int


class OpenAICompletedEvent(OpenAIImageEvent):
    """One per image, when the job succeeded."""

    usage: dict[str, Any]


def openai_events(kind: str) -> dict[str, type[BaseModel]]:
    """The `stream=true` events of `kind` (image_generation, image_edit); `error` ends a stream whose
    job failed or was cancelled."""
    return {
        f"{kind}.partial_image": OpenAIPartialImageEvent,
        f"{kind}.completed": OpenAICompletedEvent,
        "error": ErrorOut,
    }
