"""The package's exceptions: one small tree, so callers can catch by meaning.

Every exception glide_api raises on purpose derives from `GlideError`. A bad argument or setting is
an `InvalidParameter`, which is also a `ValueError` and whose message starts with the parameter's
name ("steps: at most 250 steps on this server (got 1000)"); the others cover files on disk,
transfers, the engine and jobs.
"""

from __future__ import annotations

import re

# "name: rule" — the parameter an InvalidParameter is about leads its message.
_PARAM = re.compile(r"^([A-Za-z_][A-Za-z0-9_\[\]-]*): ")


class GlideError(Exception):
    """Base class of every error glide_api raises on purpose."""


class InvalidParameter(GlideError, ValueError):
    """An argument, request field or setting breaks a rule; the message is "name: rule (got …)"."""

    @property
    def param(self) -> str | None:
        """The parameter's name (the message's leading "name:"), None if the message has none."""
        match = _PARAM.match(str(self))
        return match.group(1) if match else None


class TooLarge(InvalidParameter):
    """An input over one of the server's size limits (an upload's pixels, say): the request may be
    fine in kind but is refused by size."""


class IdempotencyKeyReused(InvalidParameter):
    """An `Idempotency-Key` this caller used before for what this request cannot be given: another
    request (route or body), or a job no longer kept (`job_id` names it). Nothing was submitted."""

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class InvalidType(InvalidParameter, TypeError):
    """An argument of the wrong type altogether (a programming error in the caller)."""


class IndexOutOfRange(InvalidParameter, IndexError):
    """An index past the end of what it indexes (e.g. an image a job does not have)."""


class WaitTimeout(GlideError, TimeoutError):
    """A wait, or a subscription's whole iteration, ran past its `timeout`."""


class PipelineError(GlideError, RuntimeError):
    """The pipeline broke its contract (e.g. ended without an output, or returned images that do not
    match its samples): a bug, reported instead of handing anyone a wrong image."""


class WeightsNotFound(GlideError, FileNotFoundError):
    """A model or tokenizer file is not on disk and may not (or could not) be downloaded."""


class DownloadError(GlideError):
    """A transfer failed: HTTP error, connection lost, or a short read. Nothing was kept as complete."""


class HostUnreachable(DownloadError):
    """No connection could be made (no network, DNS failure, refused): nothing was transferred."""


class WebhookRefused(GlideError):
    """A webhook target resolves to an address webhooks may not reach (private, loopback, ...) and
    its host is not allow-listed; the message names the address. Not worth a retry."""


class ChecksumMismatch(GlideError):
    """A file's sha256 differs from the pinned or recorded value."""


class StateDictMismatch(GlideError, ValueError):
    """A state_dict's keys or shapes do not match the model's (missing, unexpected, mis-shaped)."""


# ---- the engine: admission, job lookup, results ---------------------------------------------------


class QueueFull(GlideError):
    """The engine's queue holds its limit of waiting jobs; nothing was queued. Retry later.

    `retry_after` is a whole number of seconds (at least 1) after which a retry is likely to be
    admitted, estimated from recent batch durations: ready for an HTTP `Retry-After` header.
    """

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineClosed(GlideError, RuntimeError):
    """The engine has been shut down and takes no new jobs."""


class DataDirBusy(GlideError, RuntimeError):
    """Another process holds the data dir (its jobs are that process's to run)."""


class StoreUnavailable(GlideError):
    """The shared job store (Redis) did not answer; nothing was changed by the failed call, and the
    connection is made again by the next one. `retry_after` is a whole number of seconds."""

    def __init__(self, message: str, *, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerBusy(GlideError):
    """A capped kind of long request (event streams, synchronous waits) is at its limit; nothing was
    started. `retry_after` is a whole number of seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JobNotFound(GlideError, KeyError):
    """No job has this id: it never existed, or it finished long enough ago to have been evicted."""

    def __str__(self) -> str:
        # KeyError would print the message quoted, as it does for a missing key.
        return str(self.args[0]) if self.args else ""


class NoResult(GlideError):
    """The job has no images: it has not finished yet, or it failed or was cancelled."""


class ModelNotReady(GlideError):
    """The service's models are still loading, or could not be loaded; `reason` says which."""

    def __init__(self, reason: str, *, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Forbidden(GlideError):
    """The caller is known but may not do this (e.g. a server-wide change without an admin key); the
    message names the rule."""


class JobFailed(GlideError):
    """A job a caller waited for did not succeed: its `outcome` is "failed", "cancelled",
    "stopped" (the server is shutting down) or "timed_out" (still running when the wait ended; the
    job goes on). `job_id` names it."""

    def __init__(self, message: str, *, job_id: str, outcome: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.outcome = outcome
