"""The original Glide-Api routes, called as its README calls them (requests and curl)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess

import pytest
import requests
from PIL import Image

from glide_api.pipeline.images import read_png_metadata


def get_image(server_url: str, **params) -> requests.Response:
    return requests.get(f"{server_url}/image", params=params, timeout=180)


def test_image_returns_the_original_fields_and_a_png(server_url) -> None:
    requests.post(f"{server_url}/basemodel?diffusion_steps=3", timeout=10)
    requests.post(f"{server_url}/upmodel?diffusion_steps=2", timeout=10)
    r = get_image(server_url, size=64, prompt="mountains in the night")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data_type"] == "image/png;base64" and body["image_size"] == 64
    assert body["processing_time"].endswith(" s") and float(body["processing_time"][:-2]) > 0
    assert body["gpu_memory_allocated"].endswith(" Gb") and body["gpu_memory_reserved"].endswith(" Gb")
    image = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert image.size == (64, 64)
    assert len(body["seeds"]) == 1 and body["job_id"]


def test_a_batch_comes_back_as_one_strip_plus_each_image(server_url) -> None:
    requests.post(f"{server_url}/basemodel?diffusion_steps=3", timeout=10)
    requests.post(f"{server_url}/upmodel?diffusion_steps=2", timeout=10)
    r = get_image(
        server_url, size=32, prompt="a red cube", batch_size=3, guidance_scale=4.0, upsample_temp=0.9, seed=4
    )
    body = r.json()
    strip = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert strip.size == (96, 32)
    assert body["seeds"] == [4, 5, 6] and len(body["images"]) == 3
    first = base64.b64decode(body["images"][0])
    assert read_png_metadata(first)["guidance_scale"] == 4.0


def test_quoted_prompt_as_in_the_original_readme_drops_the_quotes(server_url) -> None:
    requests.post(f"{server_url}/basemodel?diffusion_steps=2", timeout=10)
    r = get_image(server_url, size=32, prompt='"mountains in the night"')
    png = base64.b64decode(r.json()["images"][0])
    assert read_png_metadata(png)["prompt"] == "mountains in the night"


def test_basemodel_and_upmodel_answer_parameter_counts_and_change_later_jobs(server_url) -> None:
    r = requests.post(f"{server_url}/basemodel?diffusion_steps=4", timeout=10)
    assert r.status_code == 200 and r.json() == {"base_model_total_parameters": 3_090_790}
    r = requests.post(f"{server_url}/upmodel?diffusion_steps=3", timeout=10)
    assert r.json() == {"upsample_model_total_parameters": 3_185_798}
    settings = requests.get(f"{server_url}/v1/settings", timeout=10).json()["defaults"]
    assert settings["steps"] == "4" and settings["upsample_steps"] == "3"
    body = get_image(server_url, size=64, prompt="x").json()
    metadata = read_png_metadata(base64.b64decode(body["images"][0]))
    assert metadata["base_respacing"] == "4" and metadata["upsample_respacing"] == "3"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"size": 100, "prompt": "x"}, "size"),
        ({"size": "big", "prompt": "x"}, "size"),
        ({"prompt": "x"}, "size"),
        ({"size": 64}, "prompt"),
        ({"size": 64, "prompt": "x", "upsample_temp": 1.5}, "upsample_temp"),
        ({"size": 64, "prompt": "x", "batch_size": 0}, "batch_size"),
        ({"size": 64, "prompt": "x", "batch_size": 100}, "n"),
        ({"size": 64, "prompt": "x", "guidance_scale": "strong"}, "guidance_scale"),
    ],
)
def test_bad_image_parameters_are_400_naming_the_parameter(server_url, params, param) -> None:
    r = get_image(server_url, **params)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("steps", ["0", "1001", "-3", "many", ""])
def test_bad_diffusion_steps_are_400(server_url, steps) -> None:
    for route in ("basemodel", "upmodel"):
        r = requests.post(f"{server_url}/{route}?diffusion_steps={steps}", timeout=10)
        assert r.status_code == 400 and r.json()["error"]["param"] == "diffusion_steps"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_calls_from_the_original_readme(server_url) -> None:
    def curl(*args: str) -> dict:
        out = subprocess.run(["curl", "-s", *args], capture_output=True, text=True, timeout=180, check=True)
        return json.loads(out.stdout)

    assert "base_model_total_parameters" in curl("-X", "POST", f"{server_url}/basemodel?diffusion_steps=2")
    assert "upsample_model_total_parameters" in curl("-X", "POST", f"{server_url}/upmodel?diffusion_steps=2")
    body = curl(
        "-G",
        f"{server_url}/image",
        "--data-urlencode",
        "size=64",
        "--data-urlencode",
        'prompt="mountains in the night"',
    )
    assert body["image_size"] == 64 and body["data_type"] == "image/png;base64"
    # Unquoted in a shell, the README's URL loses everything after '&': the server names what is missing.
    assert curl(f"{server_url}/image?size=64")["error"]["param"] == "prompt"


def test_the_step_routes_stay_within_max_steps(small_pipeline) -> None:
    from conftest import running

    from glide_api.config import ServiceConfig
    from glide_api.server import create_app

    with running(create_app(ServiceConfig(max_steps=10), pipeline=small_pipeline)) as url:
        for route in ("basemodel", "upmodel"):
            r = requests.post(f"{url}/{route}?diffusion_steps=11", timeout=10)
            assert r.status_code == 400, r.text
            assert (
                r.json()["error"]["param"] == "diffusion_steps"
                and "at most 10" in r.json()["error"]["message"]
            )
            assert requests.post(f"{url}/{route}?diffusion_steps=10", timeout=10).status_code == 200
        defaults = requests.get(f"{url}/v1/settings", timeout=10).json()["defaults"]
        assert (defaults["steps"], defaults["upsample_steps"]) == ("10", "10")
