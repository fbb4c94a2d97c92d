"""The v1 API over real HTTP with the small models: jobs, events, cancel, images, inpainting."""

from __future__ import annotations

import io
import time

import pytest
import requests
from PIL import Image
from sse import read_events

from glide_api.pipeline.images import read_png_metadata

FAST = {"steps": "3", "upsample_steps": "2"}
ASYNC = {"Prefer": "respond-async"}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_synchronous_generation_returns_the_finished_job_with_image_urls(server_url) -> None:
    r = requests.post(
        f"{server_url}/v1/generations",
        json={"prompt": "a red cube", "size": 64, "n": 2, "seed": 10, **FAST},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "succeeded" and job["request"]["seeds"] == [10, 11]
    assert job["chain"] == ["base 32", "upsample 64"]
    first = requests.get(server_url + job["images"][0]["url"], timeout=30)
    assert first.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(first.content)).size == (64, 64)
    assert read_png_metadata(first.content)["seed"] == 10


def test_async_generation_answers_202_and_streams_events_in_order(server_url) -> None:
    r = requests.post(
        f"{server_url}/v1/generations", json={"prompt": "sky", "size": 64, **FAST}, headers=ASYNC, timeout=30
    )
    assert r.status_code == 202 and r.headers["Location"] == f"/v1/jobs/{r.json()['id']}"
    job_id = r.json()["id"]
    with requests.get(f"{server_url}/v1/jobs/{job_id}/events?previews=true", stream=True, timeout=120) as s:
        assert s.headers["Content-Type"].startswith("text/event-stream")
        events = list(read_events(s))
    names = [name for name, _ in events]
    assert names[0] == "queued" and names[-1] == "succeeded"
    assert names.count("started") == 1 and names.index("started") < names.index("progress")
    progress = [data for name, data in events if name == "progress"]
    assert [(p["stage"], p["step"]) for p in progress] == [
        ("base 32", 1),
        ("base 32", 2),
        ("base 32", 3),
        ("upsample 64", 1),
        ("upsample 64", 2),
    ]
    assert any(p["preview"] for p in progress)
    assert events[-1][1]["job"]["images"][0]["url"].endswith("/images/0.png")
    assert [d["seq"] for _, d in events] == sorted(d["seq"] for _, d in events)


def test_events_of_a_finished_job_replay_its_history(server_url) -> None:
    job = requests.post(
        f"{server_url}/v1/generations", json={"prompt": "x", "size": 32, "steps": "2"}, timeout=60
    ).json()
    with requests.get(f"{server_url}/v1/jobs/{job['id']}/events", stream=True, timeout=30) as s:
        names = [name for name, _ in read_events(s)]
    assert names[0] == "queued" and names[-1] == "succeeded"


def test_a_stream_resumed_at_or_past_the_final_event_closes_at_once(server_url) -> None:
    job = requests.post(
        f"{server_url}/v1/generations", json={"prompt": "x", "size": 32, "steps": "2"}, timeout=60
    ).json()
    with requests.get(f"{server_url}/v1/jobs/{job['id']}/events", stream=True, timeout=30) as s:
        final = [data for _, data in read_events(s)][-1]["seq"]
    for resume_after in (final, final + 5):
        started = time.monotonic()
        r = requests.get(
            f"{server_url}/v1/jobs/{job['id']}/events",
            headers={"Last-Event-ID": str(resume_after)},
            timeout=10,  # a stream that never ends would time out here
        )
        assert r.status_code == 200 and "event:" not in r.text and "keep-alive" not in r.text
        assert time.monotonic() - started < 5
    with requests.get(
        f"{server_url}/v1/jobs/{job['id']}/events",
        headers={"Last-Event-ID": str(final - 1)},
        stream=True,
        timeout=30,
    ) as s:
        assert [name for name, _ in read_events(s)] == ["succeeded"]  # just what it missed


@pytest.mark.parametrize("header", ["²", "-1", "1.5", "abc"])
def test_a_bad_last_event_id_is_400_naming_the_header(server_url, header) -> None:
    job = requests.post(
        f"{server_url}/v1/generations", json={"prompt": "x", "size": 32, "steps": "2"}, timeout=60
    ).json()
    r = requests.get(
        f"{server_url}/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": header.encode()}, timeout=10
    )
    assert r.status_code == 400 and error_of(r)["param"] == "Last-Event-ID", r.text


def test_cancel_stops_a_running_job_within_a_step_and_the_next_job_runs(server_url) -> None:
    slow = requests.post(
        f"{server_url}/v1/generations",
        json={"prompt": "slow", "size": 256, "steps": "200", "upsample_steps": "50"},
        headers=ASYNC,
        timeout=30,
    ).json()
    with requests.get(f"{server_url}/v1/jobs/{slow['id']}/events", stream=True, timeout=120) as s:
        steps_seen = 0
        for name, data in read_events(s):
            if name == "progress":
                steps_seen = data["step"]
                if steps_seen == 2:
                    assert requests.post(f"{server_url}/v1/jobs/{slow['id']}/cancel", timeout=30).ok
            if name in ("cancelled", "succeeded", "failed"):
                break
    assert name == "cancelled" and steps_seen <= 3
    assert requests.get(f"{server_url}/v1/jobs/{slow['id']}", timeout=30).json()["status"] == "cancelled"
    after = requests.post(
        f"{server_url}/v1/generations", json={"prompt": "next", "size": 32, "steps": "2"}, timeout=60
    )
    assert after.json()["status"] == "succeeded"


def test_inpaint_takes_a_multipart_image_and_mask(server_url) -> None:
    image = Image.new("RGB", (64, 64), (10, 200, 10))
    mask = Image.new("L", (64, 64), 255)
    mask.paste(0, (0, 0, 64, 16))
    r = requests.post(
        f"{server_url}/v1/inpaint",
        data={"prompt": "a sun", "size": "64", "seed": "3", **FAST},
        files={"image": ("in.png", png(image), "image/png"), "mask": ("mask.png", png(mask), "image/png")},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    out = Image.open(io.BytesIO(requests.get(server_url + r.json()["images"][0]["url"], timeout=30).content))
    assert out.convert("RGB").getpixel((32, 60)) == (10, 200, 10)
    assert r.json()["request"]["task"] == "inpaint"


def test_models_and_settings_describe_what_the_server_can_do(server_url) -> None:
    models = requests.get(f"{server_url}/v1/models", timeout=10).json()
    assert models["ready"] and models["models"]["base"]["image_size"] == 32
    settings = requests.get(f"{server_url}/v1/settings", timeout=10).json()
    assert settings["sizes"] == {
        "text2im": [32, 64, 128, 256],
        "inpaint": [32, 64],
        "img2img": [32, 64, 128, 256],
    }
    assert settings["limits"]["max_batch_size"] >= 1 and settings["samplers"] == [
        "ancestral",
        "ddim",
        "plms",
        "dpm++2m",
        "dpm++2m-sde",
    ]


def error_of(response: requests.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"prompt": "x", "size": 100}, "size", "must be one of 32, 64, 128, 256"),
        ({"prompt": "x", "n": 0}, "n", "greater than or equal to 1"),
        ({"prompt": "x", "n": 99}, "n", "at most"),
        ({"prompt": "x" * 5000}, "prompt", "at most 1000 characters"),
        ({"prompt": ""}, "prompt", "must not be empty"),
        ({"size": 64}, "prompt", "Field required"),
        ({"prompt": "x", "steps": "abc"}, "steps", "not understood"),
        ({"prompt": "x", "steps": 5000}, "steps", "cannot take 5000 steps"),
        ({"prompt": "x", "sampler": "euler"}, "sampler", "ancestral"),
        ({"prompt": "x", "upsample_temp": 2}, "upsample_temp", "less than or equal to 1"),
        ({"prompt": "x", "guidance_scale": "big"}, "guidance_scale", "valid number"),
        ({"prompt": "x", "seed": -1}, "seed", "greater than or equal to 0"),
        ({"prompt": "x", "colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"prompt": 42}, "prompt", "valid string"),
    ],
)
def test_bad_generation_input_is_400_naming_the_field(server_url, body, param, words) -> None:
    r = requests.post(f"{server_url}/v1/generations", json=body, timeout=30)
    assert r.status_code == 400
    error = error_of(r)
    assert error["param"] == param and words in error["message"]
    assert error["type"] == "invalid_request_error"


def test_malformed_json_is_400(server_url) -> None:
    r = requests.post(
        f"{server_url}/v1/generations",
        data="{not json",
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400 and "request body" in error_of(r)["message"]
    r = requests.post(f"{server_url}/v1/generations", json=[1, 2], timeout=30)
    assert r.status_code == 400


def test_unknown_job_is_404(server_url) -> None:
    for method, path in (
        ("get", "/v1/jobs/nope"),
        ("post", "/v1/jobs/nope/cancel"),
        ("get", "/v1/jobs/nope/events"),
        ("get", "/v1/jobs/nope/images/0.png"),
    ):
        r = getattr(requests, method)(server_url + path, timeout=10)
        assert r.status_code == 404 and error_of(r)["param"] == "id"


def test_image_index_out_of_range_is_400(server_url) -> None:
    job = requests.post(
        f"{server_url}/v1/generations", json={"prompt": "x", "size": 32, "steps": "2"}, timeout=60
    ).json()
    r = requests.get(f"{server_url}/v1/jobs/{job['id']}/images/5.png", timeout=10)
    assert r.status_code == 400 and error_of(r)["param"] == "index"


def test_inpaint_upload_that_is_not_an_image_is_400(server_url) -> None:
    r = requests.post(
        f"{server_url}/v1/inpaint",
        data={"prompt": "x", "size": "32", "steps": "2"},
        files={"image": ("a.png", b"definitely not a png", "image/png")},
        timeout=30,
    )
    assert r.status_code == 400 and "not a readable image" in error_of(r)["message"]


def test_inpaint_without_an_image_is_400(server_url) -> None:
    r = requests.post(f"{server_url}/v1/inpaint", data={"prompt": "x"}, timeout=30)
    assert r.status_code == 400 and error_of(r)["param"] == "image"


def test_a_full_queue_answers_429_at_once_with_retry_after(small_pipeline) -> None:
    from conftest import running

    from glide_api.config import ServiceConfig
    from glide_api.server import create_app

    with running(create_app(ServiceConfig(max_queue=1), pipeline=small_pipeline)) as url:
        body = {"prompt": "long", "size": 64, "steps": "200", "upsample_steps": "50"}
        first = requests.post(f"{url}/v1/generations", json=body, headers=ASYNC, timeout=30).json()
        deadline = time.monotonic() + 30
        while requests.get(f"{url}/v1/jobs/{first['id']}", timeout=10).json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert requests.post(f"{url}/v1/generations", json=body, headers=ASYNC, timeout=30).status_code == 202
        start = time.monotonic()
        refused = requests.post(f"{url}/v1/generations", json=body, headers=ASYNC, timeout=30)
        assert refused.status_code == 429 and time.monotonic() - start < 5
        assert int(refused.headers["Retry-After"]) >= 1
        assert error_of(refused)["code"] == "queue_full"
        for job in requests.get(f"{url}/v1/jobs", timeout=10).json()["jobs"]:
            requests.post(f"{url}/v1/jobs/{job['id']}/cancel", timeout=10)


def test_a_synchronous_job_past_sync_timeout_goes_on_and_failed_ones_are_named_in_the_error_body(
    server_url, small_pipeline, monkeypatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from conftest import running

    from glide_api.config import ServiceConfig
    from glide_api.server import create_app

    def job_of(url: str, job_failed: requests.Response) -> dict:
        error = job_failed.json()["error"]
        assert error["code"] == "job_failed", error
        return requests.get(f"{url}/v1/jobs/{error['job_id']}", timeout=10).json()

    def running_job(url: str, prompt: str) -> str | None:
        jobs = requests.get(f"{url}/v1/jobs", timeout=10).json()["jobs"]
        return next(
            (j["id"] for j in jobs if j["request"]["prompt"] == prompt and j["status"] == "running"), None
        )

    # Past sync_timeout: v1 answers 202 with the job, the other routes 504 naming it; none is cancelled.
    with running(
        create_app(ServiceConfig(sync_timeout=0.2, base_steps="500"), pipeline=small_pipeline)
    ) as url:
        late = requests.post(f"{url}/v1/generations", json={"prompt": "late v1", "size": 64}, timeout=60)
        assert late.status_code == 202 and late.headers["Location"] == f"/v1/jobs/{late.json()['id']}"
        kept = [late.json()["id"]]
        answers = {
            "openai": requests.post(
                f"{url}/v1/images/generations", json={"prompt": "late openai", "size": "64x64"}, timeout=60
            ),
            "legacy": requests.get(f"{url}/image", params={"prompt": "late legacy", "size": 64}, timeout=60),
        }
        for route, answer in answers.items():
            assert answer.status_code == 504, (route, answer.text)
            assert "goes on" in answer.json()["error"]["message"]
            job = job_of(url, answer)
            assert job["request"]["prompt"] == f"late {route}"
            kept.append(job["id"])
        for job_id in kept:
            job = requests.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
            assert job["status"] in ("queued", "running"), job
            requests.post(f"{url}/v1/jobs/{job_id}/cancel", timeout=10)  # only to end the test sooner

    # Cancelled while its request waits.
    slow = {"prompt": "cancel me", "size": 256, "steps": "200", "upsample_steps": "50"}
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(requests.post, f"{server_url}/v1/generations", json=slow, timeout=120)
        deadline = time.monotonic() + 30
        while (job_id := running_job(server_url, "cancel me")) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert requests.post(f"{server_url}/v1/jobs/{job_id}/cancel", timeout=30).ok
        cancelled = waiting.result()
    assert cancelled.status_code == 409 and job_of(server_url, cancelled)["id"] == job_id

    # Failed.
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the test broke the pipeline")

    monkeypatch.setattr(small_pipeline, "stream", broken)
    failed = requests.post(
        f"{server_url}/v1/generations", json={"prompt": "fail me", "size": 32, "steps": "2"}, timeout=60
    )
    job = job_of(server_url, failed)
    assert failed.status_code == 500 and job["status"] == "failed" and job["request"]["prompt"] == "fail me"


def test_settings_describe_every_generation_option_as_declared(server_url) -> None:
    from glide_api.options import ALL_OPTIONS

    settings = requests.get(f"{server_url}/v1/settings", timeout=10).json()
    described = {o["name"]: o for o in settings["options"]}
    assert list(described) == [option.name for option in ALL_OPTIONS]
    for option in ALL_OPTIONS:
        shown = described[option.name]
        assert (shown["type"], shown["help"]) == (option.kind.__name__, option.help)
        assert (shown["minimum"], shown["maximum"]) == (option.minimum, option.maximum)
        assert shown["default"] == settings["defaults"][option.name]
    # Where a default depends on the server, its own value: the upsampler's size (the small one's 64).
    assert settings["defaults"]["size"] == 64 and settings["defaults"]["steps"] == "100"


def huge_png(side: int) -> bytes:
    """A real, valid black PNG of side x side grey pixels, compressed to well under a megabyte
    (built row by row, so the test itself never holds the decoded picture)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row, parts = zlib.compressobj(9), b"\0" * (side + 1), []
    for _ in range(side):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    )


def test_an_upload_is_sized_from_its_header_and_refused_before_it_is_decoded(server_url) -> None:
    import resource

    picture = huge_png(13_000)  # 169 M pixels: decoding it would take hundreds of MB
    assert len(picture) < 1 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the peak so far
    routes = ("/v1/inpaint", "/v1/img2img", "/v1/images/edits", "/v1/images/variations")
    for route in routes:
        r = requests.post(
            f"{server_url}{route}",
            files={"image": ("big.png", picture, "image/png")},
            data={"prompt": "x", "size": "32"} if route in routes[:2] else {"prompt": "x"},
            timeout=30,
        )
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert error["param"] == "image" and "max_image_pixels" in error["message"]
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 100, f"the peak memory grew by {grown_mib:.0f} MiB"


def test_event_streams_carry_the_job_though_it_is_evicted_as_it_finishes(small_pipeline) -> None:
    import threading

    from conftest import running

    from glide_api.config import ServiceConfig
    from glide_api.server import create_app

    with running(create_app(ServiceConfig(keep_finished=1), pipeline=small_pipeline)) as url:
        long = {"prompt": "long", "size": 64, "steps": "200", "upsample_steps": "50"}
        blocker = requests.post(f"{url}/v1/generations", json=long, headers=ASYNC, timeout=30).json()
        jobs = [
            requests.post(
                f"{url}/v1/generations",
                json={"prompt": "x", "size": 64, "seed": seed, **FAST},
                headers=ASYNC,
                timeout=30,
            ).json()
            for seed in (1, 2, 3)
        ]
        finals: dict[str, tuple[str, dict]] = {}
        opened = threading.Barrier(len(jobs) + 1)

        def follow(job_id: str) -> None:
            with requests.get(f"{url}/v1/jobs/{job_id}/events", stream=True, timeout=60) as s:
                events = read_events(s)
                next(events)  # queued: the stream holds its job now
                opened.wait(30)
                finals[job_id] = list(events)[-1]

        threads = [threading.Thread(target=follow, args=(job["id"],)) for job in jobs]
        for thread in threads:
            thread.start()
        opened.wait(30)
        # The three run as one batch; with keep_finished=1 each evicts the one before as it finishes.
        requests.post(f"{url}/v1/jobs/{blocker['id']}/cancel", timeout=10)
        for thread in threads:
            thread.join(60)
        assert sorted(finals) == sorted(job["id"] for job in jobs), "a stream broke"
        for seed, job in enumerate(jobs, start=1):
            name, data = finals[job["id"]]
            assert name == "succeeded" and data["job"]["id"] == job["id"]
            assert data["job"]["images"][0]["seed"] == seed
        assert [j["id"] for j in requests.get(f"{url}/v1/jobs", timeout=10).json()["jobs"]] == [
            jobs[-1]["id"]
        ]
