"""glide_api.client against the real server over real HTTP on 127.0.0.1, with the small models."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import running
from PIL import Image
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ProtocolError

from glide_api.client import (
    AuthenticationError,
    BadRequest,
    Event,
    GlideAPIError,
    GlideClient,
    Job,
    JobFailedError,
    NotFound,
    NotReady,
    RateLimited,
    ServerError,
    Timeout,
    TransportError,
)
from glide_api.client.sse import ServerSentEvent, parse_event_stream
from glide_api.config import ServiceConfig
from glide_api.pipeline.images import read_png_metadata
from glide_api.server import create_app

FAST = {"steps": "3", "upsample_steps": "2"}
SLOW = {"size": 256, "steps": "200", "upsample_steps": "50"}  # long enough to cancel or time out
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def client(server_url) -> Iterator[GlideClient]:
    with GlideClient(server_url, timeout=30) as c:
        yield c


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def cancel_all(url: str) -> None:
    for job in requests.get(f"{url}/v1/jobs", timeout=10).json()["jobs"]:
        requests.post(f"{url}/v1/jobs/{job['id']}/cancel", timeout=10)


# ---- generation, jobs, events --------------------------------------------------------------------


def test_generate_waits_and_returns_the_finished_job_whose_images_download(client) -> None:
    job = client.generate("a red cube", size=64, n=2, seed=10, guidance_scale=2.0, **FAST)
    assert isinstance(job, Job) and job.status == "succeeded" and job.done
    assert job.seeds == (10, 11) and [im.seed for im in job.images] == [10, 11] and job.guidance_scale == 2.0
    assert job.chain == ("base 32", "upsample 64") and job.prompt == "a red cube" and job.n == 2
    assert job.settings["base_respacing"] == "3" and job.raw["request"]["guidance_scale"] == 2.0
    data = client.image(job, 1)
    assert data.startswith(PNG) and Image.open(io.BytesIO(data)).size == (64, 64)
    assert read_png_metadata(data)["seed"] == 11 and client.image(job.id, 1) == data


def test_generate_without_wait_returns_the_queued_job_and_wait_returns_it_finished(client) -> None:
    queued = client.generate("sky", size=32, steps="3", wait=False)
    assert queued.status in ("queued", "running", "succeeded") and not queued.images
    done = client.wait(queued.id, timeout=60)
    assert done.id == queued.id and done.status == "succeeded" and len(done.images) == 1
    assert client.job(queued.id).status == "succeeded"


def test_events_arrive_in_order_and_end_with_the_final_event(client) -> None:
    job = client.generate("sea", size=64, wait=False, **FAST)
    events = list(client.events(job.id, previews=True, timeout=60))
    assert all(isinstance(e, Event) and e.job_id == job.id for e in events)
    assert events[0].type == "queued" and events[-1].type == "succeeded" and events[-1].terminal
    assert [e.seq for e in events] == list(range(len(events)))
    progress = [(e.progress.stage, e.progress.step, e.progress.total) for e in events if e.type == "progress"]
    assert progress == [
        ("base 32", 1, 3),
        ("base 32", 2, 3),
        ("base 32", 3, 3),
        ("upsample 64", 1, 2),
        ("upsample 64", 2, 2),
    ]
    assert any(e.preview_png and e.preview_png.startswith(PNG) for e in events)
    final = events[-1].job
    assert final is not None and final.status == "succeeded" and len(final.images) == 1


def test_events_start_after_last_event_id(client) -> None:
    job = client.generate("hill", size=32, steps="3")
    events = list(client.events(job.id, last_event_id=2))
    assert events[0].seq == 3 and events[-1].type == "succeeded"


class DropFirstEventStream(HTTPAdapter):
    """Cuts the first event stream after `keep` events, as a lost connection would; records the
    headers of every event-stream request."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep
        self.event_requests: list[dict[str, str]] = []

    def send(self, request: requests.PreparedRequest, **kw: Any) -> requests.Response:  # type: ignore[override]
        response = super().send(request, **kw)
        if "/events" in request.url:
            self.event_requests.append(dict(request.headers))
            if len(self.event_requests) == 1:
                response.raw = _CutStream(response.raw, blocks=self.keep + 1)  # + the ": stream open"
        return response


class _CutStream:
    """A urllib3 response body that ends in a protocol error after `blocks` SSE blocks."""

    def __init__(self, raw: Any, *, blocks: int) -> None:
        self.raw, self.blocks = raw, blocks

    def stream(self, amt: int | None = None, decode_content: bool = True) -> Iterator[bytes]:
        seen = b""
        for chunk in self.raw.stream(amt, decode_content=decode_content):
            seen += chunk
            if seen.count(b"\n\n") >= self.blocks:
                break
        cut = 0
        for _ in range(self.blocks):
            cut = seen.index(b"\n\n", cut) + 2
        yield seen[:cut]
        raise ProtocolError("connection broken (test)")

    def close(self) -> None:
        self.raw.close()


def test_a_dropped_event_stream_resumes_with_last_event_id(server_url) -> None:
    session = requests.Session()
    adapter = DropFirstEventStream(keep=2)
    session.mount("http://", adapter)
    with GlideClient(server_url, session=session) as c:
        job = c.generate("resume", size=64, wait=False, **FAST)
        events = list(c.events(job.id, timeout=60))
    assert [e.seq for e in events] == list(range(len(events))) and events[-1].type == "succeeded"
    assert len(adapter.event_requests) == 2
    assert "Last-Event-ID" not in adapter.event_requests[0]
    assert adapter.event_requests[1]["Last-Event-ID"] == "1"


def test_cancel_stops_a_running_job_and_waiting_for_it_raises_job_failed(client) -> None:
    job = client.generate("slow", wait=False, **SLOW)
    seen = []
    for event in client.events(job.id, timeout=60):
        seen.append(event.type)
        if event.type == "progress" and event.progress.step == 2:
            assert client.cancel(job.id).id == job.id
    assert seen[-1] == "cancelled"
    with pytest.raises(JobFailedError) as caught:
        client.wait(job.id, timeout=10)
    assert caught.value.job is not None and caught.value.job.status == "cancelled"
    assert caught.value.job_id == job.id and client.job(job.id).status == "cancelled"


def test_inpaint_sends_image_and_mask_from_a_path_bytes_or_a_file(client, tmp_path) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(png(Image.new("RGB", (64, 64), (10, 200, 10))))
    mask = Image.new("L", (64, 64), 255)
    mask.paste(0, (0, 0, 64, 16))  # paint the top quarter, keep the rest
    job = client.inpaint(image, "a sun", mask=png(mask), size=64, seed=3, **FAST)
    assert job.status == "succeeded" and job.task == "inpaint"
    out = Image.open(io.BytesIO(client.image(job, 0))).convert("RGB")
    assert out.getpixel((32, 60)) == (10, 200, 10)
    with image.open("rb") as f:
        again = client.inpaint(f, "a sun", mask=png(mask), size=64, seed=3, **FAST)
    assert client.image(again, 0) == client.image(job, 0)


def test_save_images_writes_server_named_files_inside_the_folder(client, tmp_path) -> None:
    job = client.generate("a boat", size=32, n=2, steps="3")
    folder = tmp_path / "new" / "folder"
    paths = client.save_images(job, folder)
    assert [p.name for p in paths] == [f"glide-{job.id[:8]}-0.png", f"glide-{job.id[:8]}-1.png"]
    assert all(p.parent == folder.resolve() for p in paths)
    assert [p.read_bytes() for p in paths] == [client.image(job, 0), client.image(job, 1)]
    escaped = client.save_images(job.id, folder, prefix="../../escape")
    assert all(p.parent == folder.resolve() and not p.name.startswith(".") for p in escaped)
    assert not list(tmp_path.glob("*.png")) and not list((tmp_path / "new").glob("*.png"))


def test_save_images_replaces_a_link_instead_of_following_it(client, tmp_path) -> None:
    job = client.generate("a boat", size=32, steps="3")
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"keep me")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "run-0.png").symlink_to(outside)
    [path] = client.save_images(job, folder, prefix="run")
    assert outside.read_bytes() == b"keep me"
    assert not path.is_symlink() and path.read_bytes().startswith(PNG)


class HostileNames(HTTPAdapter):
    def send(self, request: requests.PreparedRequest, **kw: Any) -> requests.Response:  # type: ignore[override]
        response = super().send(request, **kw)
        if request.url.endswith(".png"):
            response.headers["Content-Disposition"] = 'inline; filename="../../../evil.png"'
        return response


def test_save_images_keeps_a_hostile_server_file_name_inside_the_folder(server_url, tmp_path) -> None:
    session = requests.Session()
    session.mount("http://", HostileNames())
    with GlideClient(server_url, session=session) as c:
        job = c.generate("x", size=32, steps="3")
        [path] = c.save_images(job, tmp_path / "a" / "b")
    assert path == (tmp_path / "a" / "b" / "evil.png").resolve() and path.is_file()


def test_models_settings_and_ready_describe_the_server(client) -> None:
    assert client.ready() is True
    assert client.models()["models"]["base"]["image_size"] == 32
    settings = client.settings()
    assert settings["sizes"]["text2im"] == [32, 64, 128, 256] and "ddim" in settings["samplers"]


# ---- the original routes -------------------------------------------------------------------------


def test_legacy_routes_set_steps_and_generate_a_decoded_strip(small_pipeline) -> None:
    with running(create_app(ServiceConfig(), pipeline=small_pipeline)) as url, GlideClient(url) as c:
        parameters = c.models()["models"]
        assert c.set_base_steps(3) == parameters["base"]["parameters"] > 0
        assert c.set_upsample_steps(2) == parameters["upsample"]["parameters"] > 0
        result = c.legacy_image("a cube", size=64, batch_size=2, seed=5)
        assert result["seeds"] == [5, 6] and result["image_size"] == 64
        assert Image.open(io.BytesIO(result["image"])).size == (128, 64)
        assert [Image.open(io.BytesIO(p)).size for p in result["images"]] == [(64, 64), (64, 64)]
        assert read_png_metadata(result["images"][1])["seed"] == 6
        assert c.job(result["job_id"]).settings["base_respacing"] == "3"


# ---- errors --------------------------------------------------------------------------------------


def test_bad_input_raises_bad_request_naming_the_field(client) -> None:
    with pytest.raises(BadRequest) as caught:
        client.generate("x", size=100)
    error = caught.value
    assert error.status == 400 and error.param == "size" and "must be one of" in error.message
    assert error.error_type == "invalid_request_error" and isinstance(error, GlideAPIError)
    with pytest.raises(BadRequest) as caught:
        client.set_base_steps(0)
    assert caught.value.param == "diffusion_steps"
    with pytest.raises(BadRequest) as caught:
        client.inpaint(b"not an image", "x", size=32)
    assert caught.value.param == "image"


def test_unknown_job_raises_not_found(client) -> None:
    for call in (
        lambda: client.job("nope"),
        lambda: client.cancel("nope"),
        lambda: client.image("nope", 0),
        lambda: list(client.events("nope")),
    ):
        with pytest.raises(NotFound) as caught:
            call()
        assert caught.value.status == 404 and caught.value.code == "not_found"


def test_a_keyed_server_raises_authentication_error_without_the_right_key(small_pipeline) -> None:
    config = ServiceConfig(api_keys=("the-key",))
    with running(create_app(config, pipeline=small_pipeline)) as url:
        for key in (None, "wrong"):
            with GlideClient(url, api_key=key) as c, pytest.raises(AuthenticationError) as caught:
                c.settings()
            assert caught.value.status == 401 and caught.value.code == "invalid_api_key"
        with GlideClient(url, api_key="the-key") as c:
            assert c.ready() and c.settings()["limits"]["max_batch_size"] >= 1


def test_rate_limit_raises_rate_limited_with_retry_after_and_retries_only_when_asked(small_pipeline) -> None:
    with running(create_app(ServiceConfig(rate_limit=60), pipeline=small_pipeline)) as url:
        with GlideClient(url) as c, pytest.raises(RateLimited) as caught:
            for _ in range(200):
                c.settings()
        error = caught.value
        assert error.status == 429 and error.code == "rate_limit_exceeded" and error.retry_after == 1
        statuses: list[int] = []
        session = requests.Session()
        session.hooks["response"].append(lambda r, *args, **kwargs: statuses.append(r.status_code))
        with GlideClient(url, session=session, retries=2) as patient:
            for _ in range(200):
                assert patient.settings()["samplers"]  # a 429 is waited out (Retry-After), then retried
                if 429 in statuses:
                    break
        assert 429 in statuses and statuses[-1] == 200


def test_a_full_queue_raises_rate_limited_with_code_queue_full(small_pipeline) -> None:
    app = create_app(ServiceConfig(max_queue=1), pipeline=small_pipeline)
    with running(app) as url, GlideClient(url) as c:
        try:
            first = c.generate("long", wait=False, **SLOW)
            deadline = time.monotonic() + 30
            while c.job(first.id).status != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            c.generate("long", wait=False, **SLOW)
            with pytest.raises(RateLimited) as caught:
                c.generate("long", wait=False, **SLOW)
            assert caught.value.code == "queue_full" and caught.value.retry_after >= 1
        finally:
            cancel_all(url)


def test_a_server_without_models_raises_not_ready(tmp_path) -> None:
    config = ServiceConfig(
        offline=True, cache_dir=str(tmp_path), base_inpaint="none", upsample_inpaint="none"
    )
    app = create_app(config)
    with running(app) as url, GlideClient(url) as c:
        app.extensions["glide_api"]._loader.join(timeout=30)
        assert c.ready() is False and c.models()["ready"] is False
        with pytest.raises(NotReady) as caught:
            c.generate("x")
        assert caught.value.status == 503 and caught.value.retry_after == 30
        assert "not ready" in caught.value.message


def test_a_failing_pipeline_raises_job_failed_or_server_error(client, small_pipeline, monkeypatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the test broke the pipeline")

    monkeypatch.setattr(small_pipeline, "stream", broken)
    with pytest.raises(JobFailedError) as caught:
        client.generate("x", size=32, steps="2")
    assert caught.value.status == 500 and "the test broke the pipeline" in caught.value.message
    assert caught.value.job.status == "failed" and caught.value.job_id == caught.value.job.id
    queued = client.generate("x", size=32, steps="2", wait=False)
    with pytest.raises(JobFailedError) as caught:
        client.wait(queued.id, timeout=30)
    assert caught.value.job.status == "failed" and "broke" in caught.value.job.error
    monkeypatch.setattr(small_pipeline, "describe", broken)
    with pytest.raises(ServerError) as caught:
        client.models()
    assert caught.value.status == 500 and "internal error" in caught.value.message


def test_a_synchronous_job_that_outlasts_the_servers_wait_is_followed_to_its_end(small_pipeline) -> None:
    config = ServiceConfig(sync_timeout=0.2)
    with running(create_app(config, pipeline=small_pipeline)) as url, GlideClient(url) as c:
        job = c.generate("longer than the server waits", size=64, steps="20", upsample_steps="20")
        assert job.status == "succeeded" and job.prompt == "longer than the server waits"
        assert len(job.images) == 1


def test_waits_time_out_and_an_unreachable_server_is_a_transport_error(client, server_url) -> None:
    job = client.generate("slow", wait=False, **SLOW)
    try:
        start = time.monotonic()
        with pytest.raises(Timeout) as caught:
            client.wait(job.id, timeout=0.5)
        assert time.monotonic() - start < 5 and isinstance(caught.value, TimeoutError)
    finally:
        client.cancel(job.id)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with GlideClient(f"http://127.0.0.1:{port}", timeout=5) as c, pytest.raises(TransportError) as caught:
        c.ready()
    assert caught.value.status is None


def test_client_options_are_checked() -> None:
    for kwargs in ({"timeout": 0}, {"retries": -1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            GlideClient(**kwargs)
    with pytest.raises(ValueError, match="base_url"):
        GlideClient("127.0.0.1:5000")


# ---- the event-stream parser, without HTTP ----------------------------------------------------------

STREAM = (
    b": stream open\n\n"  # a comment only: no event
    b'event: progress\nid: 4\ndata: {"step":\n: keep-alive\ndata:  1}\n\n'  # two data lines, a comment
    b"data: plain\r\n\r\n"  # no event name, CRLF; the id stays 4
    b"id: 7\nevent: queued\nretry: 10\nunknown: x\ndata\n\n"  # "data" without ":" is empty data
    b"event: nothing\n\n"  # no data: not dispatched
    b"data:caf\xc3\xa9\r\r"  # no space after ":", CR line ends, a two-byte character
    b"data: unfinished\n"  # the stream ends before its blank line: dropped
)
EXPECTED = [
    ServerSentEvent(event="progress", data='{"step":\n 1}', id="4"),
    ServerSentEvent(event="message", data="plain", id="4"),
    ServerSentEvent(event="queued", data="", id="7"),
    ServerSentEvent(event="message", data="café", id="7"),
]


@pytest.mark.parametrize("size", [len(STREAM), 1, 2, 7])
def test_the_event_stream_parser_reads_fields_data_lines_comments_and_ids_in_chunks_of_any_size(size) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]  # 1: split inside every line
    assert list(parse_event_stream(chunks)) == EXPECTED


def test_the_event_stream_parser_yields_each_event_when_its_blank_line_arrives() -> None:
    seen: list[ServerSentEvent] = []

    def chunks() -> Iterator[bytes]:
        yield b"data: fir"
        yield b"st\n"
        assert not seen  # the event is not over yet
        yield b"\n"
        assert seen == [ServerSentEvent(event="message", data="first", id="")]
        yield b"data: second\r"
        yield b"\ndata: line\n\n"  # this LF ends the line the CR ended; it is no blank line

    for event in parse_event_stream(chunks()):
        seen.append(event)
    assert [e.data for e in seen] == ["first", "second\nline"]


def test_the_client_refuses_an_option_the_api_does_not_have_before_sending() -> None:
    from glide_api.client import GlideClient
    from glide_api.errors import InvalidParameter

    client = GlideClient("http://127.0.0.1:9")  # nothing listens: the refusal must come first
    with pytest.raises(
        InvalidParameter, match=r"^guidance: not a generation option; the options are size, n, seed"
    ):
        client.generate("x", guidance=3)


def test_an_idempotency_key_makes_one_job_however_often_the_client_sends_it(client) -> None:
    first = client.generate("once", size=32, seed=3, wait=False, idempotency_key="client-key-1", **FAST)
    again = client.generate("once", size=32, seed=3, idempotency_key="client-key-1", **FAST)
    assert again.id == first.id and again.status == "succeeded"
    with pytest.raises(GlideAPIError, match="Idempotency-Key"):
        client.generate("another", size=32, idempotency_key="client-key-1", wait=False, **FAST)


def test_a_keyed_submit_is_sent_again_when_its_connection_fails(server_url) -> None:
    class DropsFirstPost(HTTPAdapter):
        dropped = 0

        def send(self, request, **kw):
            if request.method == "POST" and not DropsFirstPost.dropped:
                DropsFirstPost.dropped += 1
                raise requests.ConnectionError("connection reset (by the test)")
            return super().send(request, **kw)

    session = requests.Session()
    session.mount("http://", DropsFirstPost())
    with GlideClient(server_url, timeout=30, retries=2, session=session) as keyed:
        job = keyed.generate("resent", size=32, wait=False, idempotency_key="client-key-2", **FAST)
    assert DropsFirstPost.dropped == 1 and job.status in ("queued", "running", "succeeded")
    with (
        GlideClient(server_url, timeout=30, retries=2, session=session) as unkeyed,
        pytest.raises(TransportError),
    ):
        DropsFirstPost.dropped = 0
        unkeyed.generate("not resent", size=32, wait=False, **FAST)


def test_a_webhook_given_to_the_client_is_on_the_job_and_the_workers_are_listed(small_pipeline) -> None:
    import base64

    secret = "whsec_" + base64.b64encode(b"a client test key of 32 bytes..").decode()
    config = ServiceConfig(data_dir="none", webhook_secret=secret, webhook_allow_hosts=("127.0.0.1",))
    with running(create_app(config, pipeline=small_pipeline)) as url, GlideClient(url, timeout=30) as c:
        job = c.generate(
            "hooked", size=32, webhook="http://127.0.0.1:9/hook", webhook_events=["all"], wait=False, **FAST
        )
        hook = c.job(job.id).raw["webhook"]
        assert hook["url"] == "http://127.0.0.1:9/hook" and hook["events"] == ["all"]
        (worker,) = c.workers()
        assert worker["id"] == "local" and "text2im" in worker["capabilities"]
