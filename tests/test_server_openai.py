"""The OpenAI Images API, driven by the official `openai` client against the real server."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from glide_api.pipeline.images import read_png_metadata

openai = pytest.importorskip("openai", reason="the openai client is a dev dependency")
GLIDE = {"steps": "3", "upsample_steps": "2"}


@pytest.fixture(scope="module")
def client(server_url):
    return openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0, timeout=120)


def png_file(image: Image.Image) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    buffer.name = "image.png"
    return buffer


def test_generate_returns_base64_pngs_of_the_asked_size(client) -> None:
    result = client.images.generate(
        prompt="a corgi",
        n=2,
        size="64x64",
        response_format="b64_json",
        extra_body={**GLIDE, "seed": 5, "guidance_scale": 4.0},
    )
    assert len(result.data) == 2 and result.created > 0
    images = [base64.b64decode(d.b64_json) for d in result.data]
    assert Image.open(io.BytesIO(images[0])).size == (64, 64)
    assert [read_png_metadata(i)["seed"] for i in images] == [5, 6]
    assert read_png_metadata(images[0])["guidance_scale"] == 4.0


def test_generate_defaults_to_base64_and_the_reference_size(client) -> None:
    result = client.images.generate(prompt="a corgi", model="dall-e-2", extra_body=GLIDE)
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.size == (64, 64)  # the upsampler's size, as the reference recipe


def test_generate_with_url_format_points_at_this_server(client, server_url) -> None:
    import requests

    result = client.images.generate(prompt="a corgi", size="32x32", response_format="url", extra_body=GLIDE)
    assert result.data[0].url.startswith(server_url)
    assert requests.get(result.data[0].url, timeout=30).headers["Content-Type"] == "image/png"


def test_edit_with_image_and_transparent_mask(client) -> None:
    image = Image.new("RGB", (64, 64), (200, 10, 10))
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 64, 32))  # transparent: paint here
    result = client.images.edit(
        image=png_file(image),
        mask=png_file(mask),
        prompt="blue sky",
        size="64x64",
        response_format="b64_json",
        extra_body={**GLIDE, "seed": 1},
    )
    out = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).convert("RGB")
    assert out.getpixel((32, 60)) == (200, 10, 10)  # the opaque part of the mask is kept
    assert read_png_metadata(base64.b64decode(result.data[0].b64_json))["task"] == "inpaint"


def test_edit_with_a_list_of_images_uses_the_first(client) -> None:
    rgba = Image.new("RGBA", (64, 64), (10, 10, 200, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 20, 20))
    result = client.images.edit(image=[png_file(rgba)], prompt="a star", size="32x32", extra_body=GLIDE)
    assert Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).size == (32, 32)


def test_streaming_sends_partial_images_then_the_completed_image(client) -> None:
    stream = client.images.generate(
        prompt="a corgi",
        size="64x64",
        stream=True,
        partial_images=2,
        extra_body={"steps": "10", "upsample_steps": "5"},
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[-1] == "image_generation.completed"
    partial = [e for e in events if e.type == "image_generation.partial_image"]
    assert 1 <= len(partial) <= 2 and [e.partial_image_index for e in partial] == list(range(len(partial)))
    final = Image.open(io.BytesIO(base64.b64decode(events[-1].b64_json)))
    assert final.size == (64, 64)


def test_bad_size_is_a_bad_request_error_naming_size(client) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt="a corgi", size="1024x1536")
    assert info.value.status_code == 400
    assert info.value.body["param"] == "size" and "square size" in info.value.body["message"]


def test_missing_prompt_is_a_bad_request_error(client) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt="", size="32x32")
    assert info.value.body["param"] == "prompt"


def test_too_many_images_is_a_bad_request_error(client) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt="x", n=50, size="32x32")
    assert info.value.body["param"] == "n"


def test_streams_send_their_images_though_their_jobs_are_evicted_as_they_finish(small_pipeline) -> None:
    import threading
    import time

    import requests
    from conftest import running

    from glide_api.config import ServiceConfig
    from glide_api.server import create_app

    with running(create_app(ServiceConfig(keep_finished=1), pipeline=small_pipeline)) as url:
        blocker = requests.post(
            f"{url}/v1/generations",
            json={"prompt": "long", "size": 64, "steps": "200", "upsample_steps": "50"},
            headers={"Prefer": "respond-async"},
            timeout=30,
        ).json()
        streamer = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        got: dict[int, list] = {}

        def stream(seed: int) -> None:
            extra = {**GLIDE, "seed": seed}
            got[seed] = list(
                streamer.images.generate(prompt="x", size="64x64", stream=True, extra_body=extra)
            )

        threads = [threading.Thread(target=stream, args=(seed,)) for seed in (1, 2, 3)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while (
            sum(j["status"] == "queued" for j in requests.get(f"{url}/v1/jobs", timeout=10).json()["jobs"])
            < 3
        ):
            assert time.monotonic() < deadline, "the streamed jobs were never queued"
            time.sleep(0.02)
        # The three now run as one batch; with keep_finished=1 each evicts the one before as it finishes.
        requests.post(f"{url}/v1/jobs/{blocker['id']}/cancel", timeout=10)
        for thread in threads:
            thread.join(60)
        assert sorted(got) == [1, 2, 3], "a stream failed"
        for seed, events in got.items():
            assert events[-1].type == "image_generation.completed"
            assert read_png_metadata(base64.b64decode(events[-1].b64_json))["seed"] == seed
        assert len(requests.get(f"{url}/v1/jobs", timeout=10).json()["jobs"]) == 1
