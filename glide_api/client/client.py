"""The HTTP client: `GlideClient`, one connection to a glide-api server (its v1 jobs API and the
original Glide-Api routes). It needs only `requests`; every call has a timeout."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import requests

from ..errors import InvalidParameter
from ..options import GENERATION_OPTIONS
from .errors import (
    GlideAPIError,
    JobFailedError,
    NotReady,
    RateLimited,
    Timeout,
    TransportError,
    error_from_response,
)
from .files import FileInput, disposition_name, file_field, replace_file, safe_name
from .sse import parse_event_stream
from .types import Event, Job

DEFAULT_URL = "http://127.0.0.1:5000"
DEFAULT_WAIT = 960.0  # seconds a synchronous call waits: a little over the server's sync_timeout (900)
STREAM_READ_TIMEOUT = 35.0  # the server sends an SSE comment every 15 s, so a silent stream is dead
EVENT_RECONNECTS = 3  # reconnections in a row (with Last-Event-ID) before an event stream gives up
MAX_RETRY_SLEEP = 60.0  # `retries=`: the longest Retry-After the client sleeps for


class GlideClient:
    """A connection to one glide-api server.

    base_url: the server's address. api_key: sent as `Authorization: Bearer KEY`. timeout: seconds
    each ordinary request may take (synchronous generation has its own, longer, wait). session: a
    `requests.Session` to use (it is not closed by `close()`). retries: how many times a 429 or 503
    answer is retried after its Retry-After (at most 60 s each); 0, the default, never retries.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        session: requests.Session | None = None,
        retries: int = 0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise InvalidParameter(f"base_url: must start with http:// or https:// (got {base_url!r})")
        if timeout <= 0:
            raise InvalidParameter(f"timeout: must be a positive number of seconds (got {timeout!r})")
        if retries < 0:
            raise InvalidParameter(f"retries: must be 0 or more (got {retries!r})")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = retries
        self._headers = {"User-Agent": f"glide-api-client python-requests/{requests.__version__}"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._own_session = session is None
        self._session = session or requests.Session()

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    def __enter__(self) -> GlideClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # ---- v1: jobs ---------------------------------------------------------------------------------

    def generate(
        self,
        prompt: str,
        *,
        wait: bool = True,
        timeout: float | None = None,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Job:
        """Generate images of `prompt` (`POST /v1/generations`).

        `options`: any generation option by its v1 name (`n` images, `size`, `seed`,
        `guidance_scale`, `steps`, `upsample_steps`, `sampler`, `upsample_sampler`, `eta`,
        `upsample_temp`, `negative_prompt`, `guidance_interval` as (lo, hi), `preset`:
        `glide_api.options` declares them, `settings()` shows their ranges and the presets); one
        left out or None takes the preset's value, else the server's default. An unknown name
        raises `InvalidParameter`.

        wait=True: returns the finished job, waiting up to `timeout` seconds (default 960);
        `JobFailedError` if it failed or was cancelled. wait=False: returns the queued job at once
        (`timeout`: the request's, default the client's); follow it with `events()` or `wait()`.

        webhook: a URL the server POSTs the job to, signed (docs/webhooks.md), at `webhook_events`
        (`["completed"]` by default, or `["all"]`). idempotency_key: sent as `Idempotency-Key`, so
        the server makes one job for it however often the request arrives; with it, a request
        whose connection failed is also sent again (`retries`).
        """
        body = {"prompt": prompt, **_generation_options(options), **_webhook_fields(webhook, webhook_events)}
        return self._submit(
            "/v1/generations", wait=wait, timeout=timeout, idempotency_key=idempotency_key, json=body
        )

    def inpaint(
        self,
        image: FileInput,
        prompt: str,
        *,
        mask: FileInput | None = None,
        wait: bool = True,
        timeout: float | None = None,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Job:
        """Repaint part of `image` (`POST /v1/inpaint`). `image` and `mask` are a path, bytes or a
        binary file object. The mask is white (or opaque) where the image is kept and black (or
        transparent) where it is painted; without it, the image's own transparency is the mask.
        `options`, `wait`, `timeout`, `webhook`, `webhook_events` and `idempotency_key` as in
        `generate()`."""
        files = {"image": file_field(image, "image.png")}
        if mask is not None:
            files["mask"] = file_field(mask, "mask.png")
        form = {"prompt": prompt, **_generation_options(options)}
        return self._submit_form(
            "/v1/inpaint",
            form,
            files,
            wait=wait,
            timeout=timeout,
            webhook=webhook,
            webhook_events=webhook_events,
            idempotency_key=idempotency_key,
        )

    def img2img(
        self,
        image: FileInput,
        prompt: str,
        *,
        strength: float | None = None,
        wait: bool = True,
        timeout: float | None = None,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Job:
        """Redraw `image` (a path, bytes or a binary file object) from `prompt`
        (`POST /v1/img2img`): it is noised to `strength` (0: kept as it is, 1: pure noise, as
        `generate()`; None: the server's default) and sampled from there. `options`, `wait`,
        `timeout`, `webhook`, `webhook_events` and `idempotency_key` as in `generate()`."""
        form = {"prompt": prompt, **_generation_options(options), **_options(strength=strength)}
        return self._submit_form(
            "/v1/img2img",
            form,
            {"image": file_field(image, "image.png")},
            wait=wait,
            timeout=timeout,
            webhook=webhook,
            webhook_events=webhook_events,
            idempotency_key=idempotency_key,
        )

    def job(self, job_id: str) -> Job:
        """The job's current state (`GET /v1/jobs/{id}`); `NotFound` for an unknown id."""
        return Job.from_json(self._request("GET", _job_path(job_id)).json())

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a waiting one at once, a running one within a sampling step. Returns its
        state as the server answered (a running job may still read `running` for a moment)."""
        return Job.from_json(self._request("POST", _job_path(job_id, "cancel")).json())

    def events(
        self,
        job_id: str,
        *,
        previews: bool = False,
        last_event_id: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[Event]:
        """The job's events, in order, from `GET /v1/jobs/{id}/events`: its history, then live ones,
        ending after the final one (`succeeded`, `failed` or `cancelled`). A finished job's history
        is replayed. This is the progress iterator:

            for event in client.events(job.id):
                if event.type == "progress":
                    print(event.progress.stage, event.progress.step, event.progress.total)

        previews: progress events carry a base64 PNG (`event.preview_png`) every few steps.
        last_event_id: start after this `seq`. A dropped connection is resumed with `Last-Event-ID`
        (up to 3 times in a row). timeout: seconds the whole iteration may take before `Timeout`
        (None: until the final event); it is checked as data arrives, at least every 15 s.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last, drops = last_event_id, 0
        while True:
            try:
                for event in self._event_stream(job_id, previews=previews, after=last, deadline=deadline):
                    last, drops = event.seq, 0
                    yield event
                    if event.terminal:
                        return
                lost: GlideAPIError = TransportError("the event stream ended before the job's final event")
            except Timeout:
                raise
            except TransportError as e:
                lost = e
            drops += 1
            if drops > EVENT_RECONNECTS:
                raise lost
            pause = 0.25 * 2**drops
            if deadline is not None and time.monotonic() + pause >= deadline:
                raise Timeout(f"job {job_id}: no final event within {timeout:g} s")
            time.sleep(pause)

    def wait(self, job_id: str, *, timeout: float) -> Job:
        """Wait for the job to finish (following its events) and return it; `JobFailedError` if it
        failed or was cancelled, `Timeout` after `timeout` seconds (the job keeps running)."""
        final: Event | None = None
        for event in self.events(job_id, timeout=timeout):
            final = event if event.terminal else None
        job = final.job if final is not None and final.job is not None else self.job(job_id)
        if job.status == "succeeded":
            return job
        if job.status == "failed":
            raise JobFailedError(f"job {job.id} failed: {job.error}", job=job)
        raise JobFailedError(f"job {job.id} was {job.status}", job=job)

    def image(self, job: Job | str, index: int = 0) -> bytes:
        """The PNG bytes of image `index` of a finished job (its text chunk holds the parameters)."""
        job_id = job.id if isinstance(job, Job) else job
        return self._request("GET", _job_path(job_id, f"images/{int(index)}.png")).content

    def save_images(
        self, job: Job | str, folder: str | os.PathLike[str], *, prefix: str | None = None
    ) -> list[Path]:
        """Write a finished job's images into `folder` (created if missing) and return their paths.

        Names are the server's (`glide-<id>-<index>.png`), or `<prefix>-<index>.png` when `prefix`
        is given; either way reduced to a plain file name of letters, digits, `.`, `_` and `-`, so
        nothing is written outside `folder`. An existing file of that name is replaced (a link is
        replaced, never followed).
        """
        if not isinstance(job, Job):
            job = self.job(job)
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        root = root.resolve()
        paths = []
        for image in job.images:
            response = self._request("GET", _job_path(job.id, f"images/{image.index}.png"))
            fallback = f"glide-{job.id}-{image.index}.png"
            if prefix is not None:
                name = safe_name(f"{prefix}-{image.index}.png", fallback)
            else:
                name = safe_name(disposition_name(response.headers.get("Content-Disposition")), fallback)
            path = root / name
            if path.parent != root:  # cannot happen after safe_name; kept as the guarantee's last line
                raise InvalidParameter(f"image name {name!r} would leave {root}")
            replace_file(path, response.content)
            paths.append(path)
        return paths

    # ---- v1: the service --------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        """`GET /v1/models`: whether the models are loaded, the device, precision and each model."""
        return self._request("GET", "/v1/models").json()

    def workers(self) -> list[dict[str, Any]]:
        """The workers running jobs (`GET /v1/workers`): in a fleet every live one, else the server."""
        return self._request("GET", "/v1/workers").json()["workers"]

    def settings(self) -> dict[str, Any]:
        """`GET /v1/settings`: defaults, limits, sizes and samplers of this server."""
        return self._request("GET", "/v1/settings").json()

    def ready(self) -> bool:
        """`GET /readyz`: True once the models are loaded, False while they load or are missing.
        `TransportError` when the server does not answer at all."""
        response = self._request("GET", "/readyz", ok=(200, 503))
        return response.status_code == 200

    # ---- the original Glide-Api routes ------------------------------------------------------------

    def legacy_image(
        self,
        prompt: str,
        *,
        size: int,
        batch_size: int | None = None,
        guidance_scale: float | None = None,
        upsample_temp: float | None = None,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """`GET /image` (the original route), waiting up to `timeout` seconds (default 960). Options
        left None take the server's defaults.

        Returns the server's JSON with the images decoded: `image` is the PNG bytes of the batch as
        one strip, `images` a list of each image's PNG bytes; `seeds`, `job_id`, `image_size`,
        `processing_seconds` and the original text fields as sent.
        """
        params = _options(
            prompt=prompt,
            size=size,
            batch_size=batch_size,
            guidance_scale=guidance_scale,
            upsample_temp=upsample_temp,
            seed=seed,
        )
        data = self._request(
            "GET", "/image", params=params, timeout=DEFAULT_WAIT if timeout is None else timeout
        ).json()
        data["image"] = base64.b64decode(data["image"])
        data["images"] = [base64.b64decode(png) for png in data.get("images", ())]
        return data

    def set_base_steps(self, steps: int) -> int:
        """`POST /basemodel`: the base model's steps for jobs submitted from now on (server-wide).
        Returns the base model's parameter count, as the original route did."""
        return int(
            self._request("POST", "/basemodel", params={"diffusion_steps": steps}).json()[
                "base_model_total_parameters"
            ]
        )

    def set_upsample_steps(self, steps: int) -> int:
        """`POST /upmodel`: the upsampler's steps from now on; returns its parameter count."""
        return int(
            self._request("POST", "/upmodel", params={"diffusion_steps": steps}).json()[
                "upsample_model_total_parameters"
            ]
        )

    # ---- HTTP -------------------------------------------------------------------------------------

    def _submit_form(
        self,
        path: str,
        form: dict[str, Any],
        files: dict[str, Any],
        *,
        wait: bool,
        timeout: float | None,
        webhook: str | None,
        webhook_events: Sequence[str] | None,
        idempotency_key: str | None,
    ) -> Job:
        """Submit a multipart job: lists go as comma-separated text, as the form fields take them."""
        fields = {**form, **_webhook_fields(webhook, webhook_events)}
        data = {
            k: ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v) for k, v in fields.items()
        }
        return self._submit(
            path, wait=wait, timeout=timeout, idempotency_key=idempotency_key, data=data, files=files
        )

    def _submit(
        self, path: str, *, wait: bool, timeout: float | None, idempotency_key: str | None, **kw: Any
    ) -> Job:
        keyed = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        repeatable = idempotency_key is not None
        if not wait:
            headers = {"Prefer": "respond-async", **keyed}
            return Job.from_json(
                self._request(
                    "POST", path, timeout=timeout, headers=headers, repeatable=repeatable, **kw
                ).json()
            )
        patience = DEFAULT_WAIT if timeout is None else timeout
        started = time.monotonic()
        try:
            response = self._request(
                "POST", path, timeout=patience, headers=keyed, repeatable=repeatable, **kw
            )
        except JobFailedError as error:  # attach the job the error body names
            if error.job is None and error.job_id:
                with contextlib.suppress(GlideAPIError):
                    error.job = self.job(error.job_id)
            raise
        job = Job.from_json(response.json())
        if response.status_code == 202:  # still running after the server's sync_timeout: it goes on
            return self.wait(job.id, timeout=max(0.0, patience - (time.monotonic() - started)))
        return job

    def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (),
        repeatable: bool = False,
        **kw: Any,
    ) -> requests.Response:
        """One request (retried on 429/503 if `retries` says so, and a `repeatable` one, e.g. with
        an Idempotency-Key, also when the connection failed); an error status raises its class.
        `timeout` bounds the wait for the answer (default: the client's)."""
        read = self.timeout if timeout is None else timeout
        attempt = 0
        while True:
            try:
                response = self._session.request(
                    method,
                    self.base_url + path,
                    headers={**self._headers, **(headers or {})},
                    timeout=(min(self.timeout, read), read),
                    **kw,
                )
            except requests.Timeout as e:
                raise Timeout(f"{method} {path}: no answer within {read:g} s") from e
            except requests.ConnectionError as e:
                if not repeatable or attempt == self.retries:
                    raise TransportError(f"{method} {path}: {e}") from e
                attempt += 1
                time.sleep(min(MAX_RETRY_SLEEP, 0.5 * 2**attempt))
                continue
            except requests.RequestException as e:
                raise TransportError(f"{method} {path}: {e}") from e
            if response.status_code < 400 or response.status_code in ok:
                return response
            error = error_from_response(response)
            response.close()
            if not isinstance(error, (RateLimited, NotReady)) or attempt == self.retries:
                raise error
            attempt += 1
            time.sleep(min(MAX_RETRY_SLEEP, error.retry_after if error.retry_after is not None else 1.0))

    def _event_stream(
        self, job_id: str, *, previews: bool, after: int | None, deadline: float | None
    ) -> Iterator[Event]:
        """One connection's events (parsed SSE). Ends when the server closes the stream; a broken
        connection raises `TransportError`, passing `deadline` raises `Timeout`."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        read = max(self.timeout, STREAM_READ_TIMEOUT)
        if deadline is not None:
            read = max(0.01, min(read, deadline - time.monotonic()))
        response = self._request(
            "GET",
            _job_path(job_id, "events"),
            timeout=read,
            headers=headers,
            params={"previews": "true"} if previews else None,
            stream=True,
        )
        with response:
            chunks = _arriving_before(deadline, response.iter_content(chunk_size=None), job_id=job_id)
            try:
                for message in parse_event_stream(chunks):
                    seq = int(message.id) if message.id.isdigit() else -1
                    yield Event.from_json(message.event, _event_data(message.data), seq=seq)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"job {job_id}: no final event in time") from e
                raise TransportError(f"event stream of job {job_id}: {e}") from e


# ---- helpers ---------------------------------------------------------------------------------------


def _options(**values: Any) -> dict[str, Any]:
    """The fields that were given (None means "the server's default")."""
    return {name: value for name, value in values.items() if value is not None}


V1_OPTION_NAMES = tuple(option.api_name for option in GENERATION_OPTIONS)


def _generation_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The generation options given (by their v1 names), refusing names the API does not have."""
    unknown = sorted(set(options) - set(V1_OPTION_NAMES))
    if unknown:
        raise InvalidParameter(
            f"{unknown[0]}: not a generation option; the options are {', '.join(V1_OPTION_NAMES)}"
        )
    return _options(**options)


def _job_path(job_id: str, rest: str = "") -> str:
    path = f"/v1/jobs/{quote(str(job_id), safe='')}"
    return f"{path}/{rest}" if rest else path


def _arriving_before(deadline: float | None, chunks: Iterator[bytes], *, job_id: str) -> Iterator[bytes]:
    """`chunks` as they arrive; `Timeout` for one that arrives after `deadline`. Checked per chunk,
    not per event, so the server's keep-alive comments (every 15 s) bound how late it is noticed."""
    for chunk in chunks:
        if deadline is not None and time.monotonic() > deadline:
            raise Timeout(f"job {job_id}: no final event in time")
        yield chunk


def _event_data(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise GlideAPIError(f"event stream: data is not JSON ({e})") from e
    return value if isinstance(value, dict) else {"data": value}


def _webhook_fields(webhook: str | None, events: Sequence[str] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if webhook is not None:
        fields["webhook"] = webhook
    if events is not None:
        fields["webhook_events"] = list(events)
    return fields
