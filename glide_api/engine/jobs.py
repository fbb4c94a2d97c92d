"""Job data and its state transitions.

A job is plain data: its id, the request as a JSON-safe dict, a status, progress, times, an error
message and, once it has succeeded, its result (PNG bytes per image plus what the run reports). It
never holds tensors, threads or locks, so any store (in memory today, Redis later) can keep it. A
finished job no longer holds its uploads (an inpainting image and mask): they served their run.

Statuses move one way:

    queued ──> running ──> succeeded | failed | cancelled
       │  <──────┘                                 (requeued: a durable store restarted mid-run)
       └─────────────────> cancelled | failed      (cancelled while waiting; engine shut down)

`Job` is frozen: each transition returns a new `Job`, and a transition that does not apply to the
current status raises `InvalidTransition`, so a store can apply them atomically and never lose one.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import GlideError
from ..pipeline.params import INPUT_FIELDS, GenerationRequest
from ..progress import StepProgress

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[JobStatus, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class InvalidTransition(GlideError, RuntimeError):
    """A job was asked to move to a status it cannot reach from its current one."""


@dataclass(frozen=True)
class ImageResult:
    """One image of a finished job: the PNG (with its metadata chunk), its seed and that metadata.

    The PNG is either held (`held`) or kept elsewhere and read on demand by `read` (a durable store's
    file, a Redis hash: so that memory holds no finished job's images); `png` gives it either way,
    or `JobNotFound` once the job's images are gone. `size` is its length in bytes.
    """

    seed: int
    metadata: dict[str, Any]
    size: int
    held: bytes | None = field(default=None, repr=False)
    read: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, png: bytes, *, seed: int, metadata: dict[str, Any]) -> ImageResult:
        """An image held in memory."""
        return cls(seed=seed, metadata=metadata, size=len(png), held=png)

    @property
    def png(self) -> bytes:
        if self.held is not None:
            return self.held
        return self.read()  # type: ignore[misc]  # one of the two is set

    def to_dict(self, index: int) -> dict[str, Any]:
        """JSON-safe description; the bytes themselves are fetched by job id and `index`."""
        return {"index": index, "seed": self.seed, "bytes": self.size, "metadata": self.metadata}


@dataclass(frozen=True)
class JobResult:
    """What a job's run produced: its images (in seed order) and the run's report.

    `chain`, `stage_seconds`, `total_seconds`, `peak_memory_bytes` and `models` describe the whole
    sampling batch the job ran in (shared with any batch-mates).
    """

    images: tuple[ImageResult, ...]
    chain: tuple[str, ...]
    stage_seconds: dict[str, float]
    total_seconds: float
    peak_memory_bytes: int | None
    models: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": [image.to_dict(i) for i, image in enumerate(self.images)],
            "chain": list(self.chain),
            "stage_seconds": dict(self.stage_seconds),
            "total_seconds": self.total_seconds,
            "peak_memory_bytes": self.peak_memory_bytes,
            "models": dict(self.models),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, read_of: Callable[[int], Callable[[], bytes]]) -> JobResult:
        """The inverse of `to_dict`, image `i` read by `read_of(i)`."""
        return cls(
            images=tuple(
                ImageResult(seed=d["seed"], metadata=d["metadata"], size=d["bytes"], read=read_of(d["index"]))
                for d in data["images"]
            ),
            chain=tuple(data["chain"]),
            stage_seconds=dict(data["stage_seconds"]),
            total_seconds=data["total_seconds"],
            peak_memory_bytes=data["peak_memory_bytes"],
            models=dict(data["models"]),
        )


@dataclass(frozen=True)
class Job:
    """A snapshot of one job. Times are wall-clock seconds since the epoch (comparable across hosts).

    `request` is `GenerationRequest.to_dict()` (input images as base64 until the job finishes, None
    after); `cancel_requested` is set when a cancel reached a running job, which then stops at its
    next sampling step. `owner` is an opaque name of who submitted it (None: nobody in particular):
    the engine only keeps it, for its caller to decide who may see the job; `to_dict` leaves it out.
    """

    id: str
    request: dict[str, Any] = field(repr=False)
    created_at: float
    status: JobStatus = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    progress: StepProgress | None = None
    error: str | None = None
    result: JobResult | None = field(default=None, repr=False)
    cancel_requested: bool = False
    owner: str | None = None

    @classmethod
    def new(cls, request: GenerationRequest, *, at: float, owner: str | None = None) -> Job:
        """A queued job with a fresh random id (uuid4, hex)."""
        return cls(id=uuid.uuid4().hex, request=request.to_dict(), created_at=at, owner=owner)

    @property
    def done(self) -> bool:
        """True once the job has reached a final status (succeeded, failed or cancelled)."""
        return self.status in TERMINAL

    @property
    def held_bytes(self) -> int:
        """Bytes of payload this job holds: its images' PNGs and the uploads still in its request."""
        images = sum(image.size for image in self.result.images) if self.result else 0
        return images + sum(len(self.request.get(name) or "") for name in INPUT_FIELDS)

    def generation_request(self) -> GenerationRequest:
        """The request rebuilt from its plain data (what the worker runs)."""
        return GenerationRequest.from_dict(self.request)

    # ---- transitions: each returns a new Job or raises InvalidTransition --------------------------

    def start(self, *, at: float) -> Job:
        self._require("start", "queued")
        return dataclasses.replace(self, status="running", started_at=at)

    def requeue(self) -> Job:
        """running -> queued, to run again from the start (its process stopped mid-run)."""
        self._require("requeue", "running")
        return dataclasses.replace(self, status="queued", started_at=None, progress=None)

    def advance(self, progress: StepProgress) -> Job:
        self._require("record progress for", "running")
        return dataclasses.replace(self, progress=progress)

    def request_cancel(self, *, at: float) -> Job:
        """Queued: cancelled now. Running: flagged, the worker stops it. Finished: unchanged."""
        if self.status == "queued":
            return self.finish("cancelled", at=at)
        if self.status == "running":
            return dataclasses.replace(self, cancel_requested=True)
        return self

    def finish(
        self, status: JobStatus, *, at: float, error: str | None = None, result: JobResult | None = None
    ) -> Job:
        if status not in TERMINAL:
            raise InvalidTransition(f"job {self.id}: {status!r} is not a final status")
        if self.done:
            raise InvalidTransition(f"job {self.id}: already {self.status}, cannot become {status}")
        if status == "succeeded" and (self.status != "running" or result is None):
            raise InvalidTransition(f"job {self.id}: only a running job with a result can succeed")
        if status == "failed" and not error:
            raise InvalidTransition(f"job {self.id}: a failed job needs an error message")
        # The uploads (base64, up to megabytes) served the run; a finished job need not hold them.
        request = {**self.request, **dict.fromkeys(INPUT_FIELDS)}
        return dataclasses.replace(
            self, status=status, finished_at=at, error=error, result=result, request=request
        )

    def _require(self, action: str, status: JobStatus) -> None:
        if self.status != status:
            raise InvalidTransition(f"job {self.id}: cannot {action} a {self.status} job")

    # ---- plain data ---------------------------------------------------------------------------

    def to_dict(self, *, include_inputs: bool = False) -> dict[str, Any]:
        """JSON-safe form. Images are described by index (fetch bytes with `Engine.image`).

        The request's input `image` and `mask` (base64, possibly megabytes; None once the job has
        finished) are left out unless `include_inputs` is true.
        """
        request = dict(self.request)
        if not include_inputs:
            for name in INPUT_FIELDS:
                request.pop(name, None)
        return {
            "id": self.id,
            "status": self.status,
            "request": request,
            "progress": None if self.progress is None else self.progress.to_dict(),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "cancel_requested": self.cancel_requested,
            "result": None if self.result is None else self.result.to_dict(),
        }

    def to_record(self) -> dict[str, Any]:
        """Everything the job is, as JSON-safe data (its inputs and `owner` included); `from_record`
        rebuilds it."""
        return {**self.to_dict(include_inputs=True), "owner": self.owner}

    @classmethod
    def from_record(cls, data: dict[str, Any], *, read_of: Callable[[int], Callable[[], bytes]]) -> Job:
        """The inverse of `to_record`; the result's image `i` is read by `read_of(i)`."""
        progress, result = data["progress"], data["result"]
        return cls(
            id=data["id"],
            request=data["request"],
            created_at=data["created_at"],
            status=data["status"],
            started_at=data["started_at"],
            finished_at=data["finished_at"],
            progress=None if progress is None else StepProgress.from_dict(progress),
            error=data["error"],
            result=None if result is None else JobResult.from_dict(result, read_of=read_of),
            cancel_requested=data["cancel_requested"],
            owner=data["owner"],
        )
