"""Typed job events, as plain data: what a subscriber (an SSE stream, a CLI bar) sees of a job.

Every job's history is a sequence of events: one or more `Queued` (its position as the queue
moves), `Started`, a `Progress` per sampling step, and exactly one final event: `Succeeded`,
`Failed` or `Cancelled`. A job cancelled or failed while waiting skips `Started`. `Heartbeat` is not
part of any history; a subscription yields it when asked to, while nothing happens.

`seq` is the event's 0-based position in its job's history (-1 for a heartbeat), usable as an SSE
`id:` so that a reconnecting client can resume after the last event it saw.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import InvalidParameter
from ..progress import FIELDS as PROGRESS_FIELDS
from ..progress import StepProgress
from .jobs import Job


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all events. `to_dict()` gives `{"type": ..., "job_id": ..., "seq": ..., <fields>}`."""

    type: ClassVar[str] = "event"
    terminal: ClassVar[bool] = False  # the job's last event: a subscription ends after it

    job_id: str
    seq: int = -1

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type}
        data.update((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class Queued(Event):
    """The job waits; `position` 1 means it runs next."""

    type: ClassVar[str] = "queued"
    position: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Started(Event):
    type: ClassVar[str] = "started"


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress(Event):
    """A sampling step finished: `progress` says which. `elapsed`: seconds since the job started.

    `preview` is a base64 PNG of the job's first image as currently estimated (pred_x0); it is set
    only for subscribers that asked for previews, every `preview_every` steps and at each stage's
    last step, and only while the subscriber keeps up (a lagging subscriber skips stale previews).
    """

    type: ClassVar[str] = "progress"
    progress: StepProgress
    elapsed: float
    preview: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Flat: the progress fields stand beside `elapsed` and `preview` (as the SSE data shows them)."""
        return {
            "type": self.type,
            "job_id": self.job_id,
            "seq": self.seq,
            **self.progress.to_dict(),
            "elapsed": self.elapsed,
            "preview": self.preview,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Succeeded(Event):
    """The job finished; `job` is its `Job.to_dict()` (images referenced by index).

    `snapshot` is the finished `Job` itself, PNG bytes included, as the store hands it to every
    subscriber: a stream sends the images from it and never looks the job up again (which fails if
    the job was evicted meanwhile). It is not plain data: `to_dict()` leaves it out, and an event
    rebuilt by `event_from_dict` has None until its store attaches the job.
    """

    type: ClassVar[str] = "succeeded"
    terminal: ClassVar[bool] = True
    job: dict[str, Any]
    snapshot: Job | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "job_id": self.job_id, "seq": self.seq, "job": self.job}


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed(Event):
    type: ClassVar[str] = "failed"
    terminal: ClassVar[bool] = True
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled(Event):
    type: ClassVar[str] = "cancelled"
    terminal: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(Event):
    """Nothing happened for a while (yielded only when a subscription asks for heartbeats)."""

    type: ClassVar[str] = "heartbeat"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls for cls in (Queued, Started, Progress, Succeeded, Failed, Cancelled, Heartbeat)
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """The inverse of `Event.to_dict()` (for stores that keep events outside this process)."""
    fields = dict(data)
    kind = fields.pop("type", None)
    if kind not in EVENT_TYPES:
        raise InvalidParameter(f"type: must be one of {', '.join(EVENT_TYPES)} (got {kind!r})")
    if kind == Progress.type:
        fields["progress"] = StepProgress.from_dict({name: fields.pop(name) for name in PROGRESS_FIELDS})
    return EVENT_TYPES[kind](**fields)
