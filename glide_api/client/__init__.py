"""A small typed client for a glide-api server: the v1 jobs API and the original Glide-Api routes.

    from glide_api.client import GlideClient

    with GlideClient("http://127.0.0.1:5000") as client:
        job = client.generate("a corgi in a field", size=64, n=2, seed=1)   # waits for the images
        paths = client.save_images(job, "out")

        job = client.generate("a lighthouse at dusk", wait=False)           # queued, answers at once
        for event in client.events(job.id):                                 # live progress (SSE)
            if event.type == "progress":
                print(f"{event.stage}: {event.step}/{event.total}")
        job = client.wait(job.id, timeout=600)                              # the finished job

It needs only `requests` (importing it loads no torch). Every call has a timeout. An HTTP error
raises the `GlideAPIError` subclass for its status, built from the server's error body
`{"error": {"message", "type", "param", "code"}}` (and `job_id` when a synchronous job failed).
Nothing is retried unless the client is made with `retries=N`, and then only 429 and 503 answers
(nothing was queued), after their `Retry-After`.

Modules: `client` (GlideClient), `errors` (the exceptions), `types` (Job, JobImage, Event), `sse`
(the event-stream parser), `files` (upload inputs, safe image files).
"""

from __future__ import annotations

from .client import (
    DEFAULT_URL,
    DEFAULT_WAIT,
    EVENT_RECONNECTS,
    MAX_RETRY_SLEEP,
    STREAM_READ_TIMEOUT,
    GlideClient,
)
from .errors import (
    AuthenticationError,
    BadRequest,
    GlideAPIError,
    JobFailedError,
    NotFound,
    NotReady,
    RateLimited,
    ServerError,
    Timeout,
    TransportError,
)
from .files import FileInput
from .types import FINAL_STATUSES, Event, Job, JobImage

__all__ = [
    "DEFAULT_URL",
    "DEFAULT_WAIT",
    "EVENT_RECONNECTS",
    "FINAL_STATUSES",
    "MAX_RETRY_SLEEP",
    "STREAM_READ_TIMEOUT",
    "AuthenticationError",
    "BadRequest",
    "Event",
    "FileInput",
    "GlideAPIError",
    "GlideClient",
    "Job",
    "JobFailedError",
    "JobImage",
    "NotFound",
    "NotReady",
    "RateLimited",
    "ServerError",
    "Timeout",
    "TransportError",
]
