"""What the client returns: jobs, their images and their events, built from the server's JSON."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..progress import StepProgress

FINAL_STATUSES = ("succeeded", "failed", "cancelled")  # also the names of a job's final events


@dataclass(frozen=True)
class JobImage:
    """One image of a finished job; `client.image(job, index)` fetches the PNG."""

    index: int
    seed: int
    url: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Job:
    """A v1 job as the server described it. `raw` keeps the whole JSON (fields added later too)."""

    id: str
    status: str  # queued, running, succeeded, failed or cancelled
    prompt: str
    task: str
    size: int | None
    n: int
    seeds: tuple[int, ...]
    guidance_scale: float | None
    images: tuple[JobImage, ...]
    progress: StepProgress | None
    error: str | None
    chain: tuple[str, ...]
    created_at: float | None
    started_at: float | None
    finished_at: float | None
    total_seconds: float | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def done(self) -> bool:
        """The job will not change any more (succeeded, failed or cancelled)."""
        return self.status in FINAL_STATUSES

    @property
    def settings(self) -> dict[str, Any]:
        """The generation settings the server used (guidance, steps, samplers, ...)."""
        return dict(self.raw.get("request", {}).get("settings", {}))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        request = data.get("request") or {}
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            prompt=request.get("prompt", ""),
            task=request.get("task", "text2im"),
            size=request.get("size"),
            n=request.get("batch_size", len(data.get("images") or ()) or 1),
            seeds=tuple(request.get("seeds") or ()),
            guidance_scale=request.get("guidance_scale"),
            images=tuple(
                JobImage(
                    index=im["index"], seed=im["seed"], url=im["url"], metadata=dict(im.get("metadata") or {})
                )
                for im in data.get("images") or ()
            ),
            progress=StepProgress.from_dict(data["progress"]) if data.get("progress") else None,
            error=data.get("error"),
            chain=tuple(data.get("chain") or ()),
            created_at=data.get("created_at"),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            total_seconds=data.get("total_seconds"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Event:
    """One server-sent event of a job: `queued` (position), `started`, `progress` (`progress`: the
    stage and step; `preview` when asked for), then one of `succeeded` (job), `failed` (message) or
    `cancelled`. Fields an event type does not carry are None; `raw` is the event's whole JSON."""

    type: str
    seq: int
    job_id: str
    position: int | None = None
    progress: StepProgress | None = None
    elapsed: float | None = None
    preview: str | None = field(default=None, repr=False)  # base64 PNG
    message: str | None = None
    job: Job | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """The job's last event: the stream ends after it."""
        return self.type in FINAL_STATUSES

    @property
    def preview_png(self) -> bytes | None:
        return base64.b64decode(self.preview) if self.preview else None

    @classmethod
    def from_json(cls, event_type: str, data: Mapping[str, Any], *, seq: int = -1) -> Event:
        known = ("position", "elapsed", "preview", "message")
        job = data.get("job")
        kind = str(data.get("type", event_type))
        return cls(
            type=kind,
            seq=int(data.get("seq", seq)),
            job_id=str(data.get("job_id", "")),
            **{k: data.get(k) for k in known},
            progress=StepProgress.from_dict(data) if kind == "progress" else None,
            job=Job.from_json(job) if isinstance(job, Mapping) and "id" in job else None,
            raw=dict(data),
        )
