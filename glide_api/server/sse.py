"""Server-sent events framing: one event as text, and a job's engine events as a stream."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from ..engine import Event, Job, Succeeded

KEEP_ALIVE = ": keep-alive\n\n"


def sse(event: str, data: dict[str, Any], *, event_id: int | None = None) -> str:
    """One server-sent event (`event:`, optional `id:`, one `data:` line of JSON)."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None and event_id >= 0 else "")
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


def job_event_stream(events: Iterator[Event], job_dict: Callable[[Job], dict[str, Any]]) -> Iterator[str]:
    """Engine events as SSE text; heartbeats become comments; `succeeded` carries the v1 job JSON,
    made from the event's own snapshot (the job may be evicted by then)."""
    yield ": stream open\n\n"
    for event in events:
        if event.type == "heartbeat":
            yield KEEP_ALIVE
            continue
        data = event.to_dict()
        if isinstance(event, Succeeded) and event.snapshot is not None:
            data["job"] = job_dict(event.snapshot)
        yield sse(event.type, data, event_id=event.seq)
