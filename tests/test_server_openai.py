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
