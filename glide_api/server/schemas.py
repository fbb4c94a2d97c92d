"""Request and response models of the HTTP APIs (pydantic v2), as the OpenAPI document shows them.

Static bounds live here; bounds an operator configures (prompt length, images per request, steps)
are checked in `requests.py` against the running configuration, with the same error shape.
"""

from __future__ import annotations

from typing import Any, Literal

from apiflask.fields import UploadFile
from pydantic import BaseModel, ConfigDict, Field

SamplerName = Literal["ancestral", "ddim"]
MAX_SEED = 2**32 - 1
Steps = str | int  # a step count (50) or a respacing string ("50", "fast27", "ddim25", "10,10,3,2,2")


class GlideOptions(BaseModel):
    """GLIDE's knobs, shared by every generation endpoint (all optional: server defaults apply)."""

    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="seed of the first image; image i uses seed+i; random when absent",
    )
    guidance_scale: float | None = Field(
        None, ge=0, le=100, description="classifier-free guidance (default 3.0)"
    )
    steps: Steps | None = Field(
        None,
        description="base model steps: a count or respacing string (default: the server's, initially 100)",
    )
    upsample_steps: Steps | None = Field(None, description="upsampler steps (default fast27)")
    sampler: SamplerName | None = Field(None, description="base sampler (default ancestral)")
    upsample_sampler: SamplerName | None = Field(
        None, description="upsampler sampler (default ddim; ancestral for inpainting)"
    )
    eta: float | None = Field(None, ge=0, le=1, description="DDIM eta (default 0)")
    upsample_temp: float | None = Field(
        None, ge=0, le=1, description="upsampler start-noise scale (default 0.997)"
    )


# ---- v1 --------------------------------------------------------------------------------------------


class GenerationIn(GlideOptions):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="what to draw", max_length=100_000)
    size: int | None = Field(None, description="output size in pixels; one of /v1/settings sizes")
    n: int = Field(1, ge=1, description="number of images (at most the server's max_batch_size)")


class InpaintIn(GlideOptions):
    """Multipart form: the image, an optional mask (white/opaque = keep, black/transparent = paint;
    without it the image's transparency is the mask), and the prompt."""

    image: UploadFile = Field(description="the image to edit (PNG, JPEG, WebP)")
    mask: UploadFile | None = Field(None, description="keep-mask of the image's size")
    prompt: str = Field(max_length=100_000)
    size: int | None = None
    n: int = Field(1, ge=1)


class JobProgressOut(BaseModel):
    stage: str
    stage_index: int
    stages: int
    step: int
    total: int


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
    progress: JobProgressOut | None = None
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
    device: str | None = None
    precision: str | None = None
    batch_invariant: bool | None = None
    models: dict[str, dict[str, Any]] = {}


class SettingsOut(BaseModel):
    defaults: dict[str, Any]
    limits: dict[str, Any]
    sizes: dict[str, list[int]]
    samplers: list[str]


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
    batch_size: int = Field(1, ge=1)
    guidance_scale: float = Field(3.0, ge=0, le=100)
    upsample_temp: float = Field(0.997, ge=0, le=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)


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
    diffusion_steps: int = Field(ge=1, le=1000, description="steps for jobs submitted from now on")


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
