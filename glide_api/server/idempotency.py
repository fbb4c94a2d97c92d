"""Idempotent submits: the `Idempotency-Key` header on every submitting route.

With `Idempotency-Key: K`, a route submits at most one job per (caller, K) within `idempotency_ttl`:
the same key with the same request (`request_fingerprint`: route, query and body) gets that job
again, answered as the first request was and marked `Idempotent-Replayed: true`; the same key with
another request is a 422 naming the header. The records are the service's `IdempotencyKeys`
(`engine/idempotency_keys.py`): in the data dir, so a key outlives a restart, or in memory.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from typing import IO

from apiflask import APIFlask
from flask import Response, g, request

from ..engine import Job
from ..engine.idempotency_keys import CLAIM_SECONDS
from ..errors import IdempotencyKeyReused, InvalidParameter, JobNotFound, ServerBusy
from .owners import caller
from .schemas import IDEMPOTENCY_KEY_CHARS
from .views import service

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
POLL_SECONDS = 0.02  # how often a request waits for the job of a key another request holds


def checked_key(value: str) -> str:
    """The header's value, if it is 1 to `IDEMPOTENCY_KEY_CHARS` printable ASCII characters."""
    printable = value.isascii() and value.isprintable() and value.strip()
    if not (printable and len(value) <= IDEMPOTENCY_KEY_CHARS):
        raise InvalidParameter(
            f"{HEADER}: must be 1 to {IDEMPOTENCY_KEY_CHARS} printable ASCII characters, not only spaces "
            f"(got {len(value)} characters{'' if value.isascii() else ', not all ASCII'})"
        )
    return value


def request_fingerprint() -> str:
    """sha256 of what makes this request's job: method and route, query, and body (JSON with its
    keys sorted; a form's fields and its files' bytes, in the order sent per name). Headers are not
    in it: `Prefer: respond-async` changes the answer, not the job."""
    uploads = [(name, _digest(f.stream)) for name, f in request.files.items(multi=True)]
    content = {
        "route": f"{request.method} {request.url_rule.rule if request.url_rule else request.path}",
        "query": _by_name(request.args.items(multi=True)),
        "json": request.get_json(silent=True) if request.is_json else None,
        "form": _by_name(request.form.items(multi=True)),
        "files": _by_name(uploads),
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _by_name(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Sorted by name; the values of one name keep their order (the first `image[]` is the image)."""
    return sorted(items, key=lambda item: item[0])


def _digest(stream: IO[bytes]) -> str:
    """sha256 of an upload's bytes, whoever has read it already (it is rewound before and after)."""
    digest = hashlib.sha256()
    stream.seek(0)
    while chunk := stream.read(1 << 16):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


def idempotent(submit: Callable[[], Job], key: str | None) -> Callable[[], Job]:
    """`submit` under this request's `Idempotency-Key` (`key`; None: no header, `submit` itself).

    The returned call claims the key: new, it submits and binds the job (releasing the key if the
    submit raises); a replay returns the key's job (marked for `Idempotent-Replayed`); another
    request's key is `IdempotencyKeyReused` (422), as is a key whose job is no longer kept. While
    another request holds the key, it waits for that one's job (`ServerBusy` past the hold).
    """
    if key is None:
        return submit
    key = checked_key(key)
    svc = service()
    keys = svc.idempotency
    fingerprint = request_fingerprint()
    scope = caller() or ""

    def once() -> Job:
        deadline = time.monotonic() + CLAIM_SECONDS + 1.0
        while (claim := keys.claim(scope=scope, key=key, fingerprint=fingerprint)).state == "pending":
            if time.monotonic() > deadline:
                raise ServerBusy(
                    f"{HEADER}: another request with this key is still being submitted; retry",
                    retry_after=1,
                )
            time.sleep(POLL_SECONDS)
        if claim.state == "mismatch":
            raise IdempotencyKeyReused(
                f"{HEADER}: this key was used for another request (another route or body) within the "
                f"last {svc.config.idempotency_ttl:g} s; send a new key for a new request"
            )
        if claim.state == "replay":
            assert claim.job_id is not None
            try:
                job = svc.engine.get(claim.job_id)
            except JobNotFound:
                raise IdempotencyKeyReused(
                    f"{HEADER}: this key submitted job {claim.job_id}, which is no longer kept; "
                    "send a new key to submit again",
                    job_id=claim.job_id,
                ) from None
            g.idempotent_replay = True
            return job
        try:
            job = submit()
        except BaseException:
            keys.release(claim)
            raise
        keys.bind(claim, job.id)
        return job

    return once


def install(app: APIFlask) -> None:
    """Answers to a replayed request (also its errors, e.g. the job failed) carry `Idempotent-Replayed`."""

    @app.after_request
    def mark_replay(response: Response) -> Response:
        if g.get("idempotent_replay"):
            response.headers[REPLAYED] = "true"
        return response
