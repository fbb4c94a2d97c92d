"""Request and response models of the HTTP APIs (pydantic v2), as the OpenAPI document shows them.

Static bounds live here; bounds an operator configures (prompt length, images per request, steps)
are checked in `requests.py` against the running configuration, with the same error shape.
"""

from __future__ import annotations

from typing import Any, Literal

from apiflask.fields import UploadFile
from pydantic import BaseModel, ConfigDict, Field

from ..options import (
    BATCH_SIZE,
    DIFFUSION_STEPS,
    ETA,
    GUIDANCE_SCALE,
    SAMPLER,
    SAMPLERS,
    SEED,
    SIZE,
    STEPS,
    UPSAMPLE_SAMPLER,
    UPSAMPLE_STEPS,
    UPSAMPLE_TEMP,
    Option,
)
from ..progress import StepProgress

SamplerName = Literal[SAMPLERS]
Steps = str | int  # a step count (50) or a respacing string ("50", "fast27", "ddim25", "10,10,3,2,2")
NO_DEFAULT: Any = None


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
    upsample_temp: float | None = option_field(UPSAMPLE_TEMP)


# ---- v1 --------------------------------------------------------------------------------------------


class GenerationIn(GlideOptions):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="what to draw", max_length=100_000)
    size: int | None = option_field(SIZE)
    n: int = option_field(BATCH_SIZE, BATCH_SIZE.default)


class InpaintIn(GlideOptions):
    """Multipart form: the image, an optional mask (white/opaque = keep, black/transparent = paint;
    without it the image's transparency is the mask), and the prompt."""

    image: UploadFile = Field(description="the image to edit (PNG, JPEG, WebP)")
    mask: UploadFile | None = Field(None, description="keep-mask of the image's size")
    prompt: str = Field(max_length=100_000)
    size: int | None = option_field(SIZE)
    n: int = option_field(BATCH_SIZE, BATCH_SIZE.default)


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
    seeds: list[int]
    settings: dict[str, Any]


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


class OptionOut(BaseModel):
    name: str
    type: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: list[str] | None = None
    help: str


class SettingsOut(BaseModel):
    defaults: dict[str, Any] = Field(description="each option's value when a request leaves it out")
    limits: dict[str, Any]
    sizes: dict[str, list[int]]
    samplers: list[str]
    options: list[OptionOut] = Field(description="every generation option: type, range, help")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    job_id: str | None = None  # errors of a synchronous request's job: which job


class ErrorOut(BaseModel):
    error: ErrorBody


# ---- the original Glide-Api routes ---------------------------------------------------------------


class LegacyImageQuery(BaseModel):
    size: int = Field(description="64, 128, 256, 512 or 1024 with the official models")
    prompt: str = Field(max_length=100_000)
    batch_size: int = option_field(BATCH_SIZE, BATCH_SIZE.default)
    guidance_scale: float = option_field(GUIDANCE_SCALE, GUIDANCE_SCALE.default)
    upsample_temp: float = option_field(UPSAMPLE_TEMP, UPSAMPLE_TEMP.default)
    seed: int | None = option_field(SEED)


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
    diffusion_steps: int = Field(ge=1, le=DIFFUSION_STEPS, description="steps for jobs submitted from now on")


class BaseModelOut(BaseModel):
    base_model_total_parameters: int


class UpModelOut(BaseModel):
    upsample_model_total_parameters: int


# ---- OpenAI Images API ---------------------------------------------------------------------------


class OpenAIImageOptions(GlideOptions):
    """OpenAI's fields; `model`, `quality`, `style`, `user`, `background`, `output_format`,
    `moderation` and `output_compression` are accepted and ignored (there is one GLIDE)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(max_length=100_000)
    n: int | None = Field(1, ge=1)
    size: str | None = Field(None, description='"256x256" (square sizes the models make) or "auto"')
    response_format: Literal["b64_json", "url"] | None = Field(None, description="default b64_json")
    stream: bool | None = Field(False, description="send server-sent events")
    partial_images: int | None = Field(0, ge=0, le=3, description="partial images to stream (0–3)")
    model: str | None = None
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    background: str | None = None
    output_format: str | None = None
    moderation: str | None = None
    output_compression: int | None = None


class OpenAIImagesGenerateIn(OpenAIImageOptions):
    pass


class OpenAIImagesEditIn(OpenAIImageOptions):
    """Multipart: `image` (or `image[]`), optional `mask` whose transparent pixels mark the area to
    paint (without it, the image's own transparency), and the fields above as form values."""

    image: UploadFile | None = None
    mask: UploadFile | None = None


class OpenAIImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class OpenAIImagesOut(BaseModel):
    created: int
    data: list[OpenAIImageData]
