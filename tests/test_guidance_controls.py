"""Guidance controls: a negative prompt in place of the empty one, and guidance on a part of the
schedule only; in the library, over the v1 API, the OpenAI API's extra fields and the original
`GET /image`, with the golden small models."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
import torch

from glide_api.config import ServiceConfig
from glide_api.diffusion.guidance import classifier_free_guidance
from glide_api.options import PRESETS
from glide_api.pipeline.images import read_png_metadata
from glide_api.pipeline.params import BatchSettings, GenerationRequest, Sample

FAST = {"base_respacing": "6", "upsample_respacing": "2"}  # base timesteps 0, 200, …, 800, 999
HTTP_FAST = {"steps": "6", "upsample_steps": "2", "size": 32}
MAX_CHARS = ServiceConfig().max_prompt_chars


@contextmanager
def counted_rows(pipeline) -> Iterator[list[int]]:
    """The rows of every base model evaluation made inside the block."""
    rows: list[int] = []
    hook = pipeline.base.network.register_forward_hook(
        lambda module, args, out: rows.append(args[0].shape[0])
    )
    try:
        yield rows
    finally:
        hook.remove()


def pixels(pipeline, **options) -> bytes:
    request = GenerationRequest.create("a red cube", size=32, seed=4, **FAST, **options)
    return pipeline.generate(request).images[0].image.tobytes()


def test_an_empty_negative_prompt_is_the_default_and_another_changes_the_image(small_pipeline) -> None:
    default = pixels(small_pipeline)
    assert pixels(small_pipeline, negative_prompt="") == default
    assert pixels(small_pipeline, negative_prompt="a blue sphere") != default


def test_an_interval_over_the_whole_schedule_equals_none(small_pipeline) -> None:
    assert pixels(small_pipeline, guidance_interval=(0.0, 1.0)) == pixels(small_pipeline)
    assert pixels(small_pipeline, guidance_interval="0.2,0.5") != pixels(small_pipeline)


def test_outside_its_interval_a_sample_costs_one_model_row_instead_of_two(small_pipeline) -> None:
    with counted_rows(small_pipeline) as whole:
        pixels(small_pipeline)
    with counted_rows(small_pipeline) as part:
        pixels(small_pipeline, guidance_interval=(0.0, 0.5))  # guided at t = 0, 200, 400 only
    assert whole == [2] * 6
    assert part == [1, 1, 1, 2, 2, 2]  # the sampler runs from t = 999 down


def test_batch_mates_keep_their_own_negative_prompts_and_intervals(small_pipeline) -> None:
    settings = BatchSettings(size=32, **FAST)
    samples = [
        Sample("a red cube", 1, 3.0, negative_prompt="green"),
        Sample("a red cube", 2, 5.0, guidance_interval=(0.3, 0.9)),
        Sample("a dog", 3, 4.0, negative_prompt="a cat", guidance_interval=(0.0, 0.1)),
    ]
    outputs = list(small_pipeline.stream(settings, samples))[-1]
    for image, sample in zip(outputs.images, samples, strict=True):
        alone = list(small_pipeline.stream(settings, [sample]))[-1].images[0]
        assert image.png == alone.png
        assert image.metadata["negative_prompt"] == sample.negative_prompt
        assert image.metadata["guidance_interval"] == list(sample.guidance_interval)


def test_guidance_outside_the_interval_is_the_conditional_output() -> None:
    def paired(x: torch.Tensor, t: torch.Tensor, rows=None) -> torch.Tensor:
        # Row r's ε is r + 1 everywhere (its own value, wherever it sits in x); variance channels 9.
        ids = torch.tensor(range(x.shape[0]) if rows is None else rows, dtype=torch.float32)
        eps = (ids + 1).reshape(-1, 1, 1, 1).expand(-1, 3, 2, 2)
        return torch.cat([eps, torch.full_like(eps, 9.0)], dim=1)

    x, t = torch.zeros(2, 3, 2, 2), torch.tensor([500, 500])
    guided = classifier_free_guidance(
        paired, [3.0, 2.0], intervals=[(0.0, 0.4), (0.5, 1.0)], diffusion_steps=1000
    )
    out = guided(x, t)
    assert torch.equal(out[0, :3], torch.full((3, 2, 2), 1.0))  # unguided: its prompt row alone
    assert torch.equal(out[1, :3], torch.full((3, 2, 2), 4.0 + 2.0 * (2.0 - 4.0)))  # rows 1 and 3
    assert torch.equal(out[:, 3:], torch.full((2, 3, 2, 2), 9.0))
    everywhere = classifier_free_guidance(paired, [3.0, 2.0], intervals=[(0, 1)] * 2, diffusion_steps=1000)
    assert torch.equal(everywhere(x, t), classifier_free_guidance(paired, [3.0, 2.0])(x, t))


@pytest.mark.parametrize(
    ("value", "valid"),
    [("0.2,0.8", True), ((0, 1), True), ("0.8,0.2", False), ("1", False), ((0, 2), False), ("a,b", False)],
)
def test_a_guidance_interval_is_two_ordered_fractions(value, valid) -> None:
    make = lambda: GenerationRequest.create("x", size=32, guidance_interval=value)  # noqa: E731
    if valid:
        assert make().guidance_interval == tuple(float(v) for v in str(value).strip("()").split(","))
    else:
        with pytest.raises(ValueError, match=r"^guidance_interval: must be two numbers"):
            make()


# ---- over HTTP --------------------------------------------------------------------------------------


def v1_png(url: str, **fields) -> bytes:
    r = requests.post(
        f"{url}/v1/generations", json={"prompt": "a red cube", "seed": 8, **HTTP_FAST, **fields}, timeout=60
    )
    assert r.status_code == 200, r.text
    return requests.get(url + r.json()["images"][0]["url"], timeout=30).content


def test_v1_takes_a_negative_prompt_and_a_guidance_interval(server_url) -> None:
    default = v1_png(server_url)
    assert v1_png(server_url, negative_prompt="") == default
    other = v1_png(server_url, negative_prompt="a blue sphere", guidance_interval=[0.2, 0.9])
    assert other != default
    metadata = read_png_metadata(other)
    assert (metadata["negative_prompt"], metadata["guidance_interval"]) == ("a blue sphere", [0.2, 0.9])
    assert read_png_metadata(v1_png(server_url, guidance_interval="0, 1"))["guidance_interval"] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("fields", "param", "rule"),
    [
        ({"guidance_interval": [0.9, 0.1]}, "guidance_interval", "0 <= lo <= hi <= 1"),
        ({"guidance_interval": [0, 1.5]}, "guidance_interval", "0 <= lo <= hi <= 1"),
        ({"guidance_interval": "half"}, "guidance_interval", "0 <= lo <= hi <= 1"),
        ({"negative_prompt": "x" * (MAX_CHARS + 1)}, "negative_prompt", f"at most {MAX_CHARS} characters"),
        ({"negative_prompt": 5}, "negative_prompt", "valid string"),
    ],
)
def test_bad_guidance_controls_are_a_400_naming_the_field_and_the_rule(
    server_url, fields, param, rule
) -> None:
    r = requests.post(f"{server_url}/v1/generations", json={"prompt": "x", **HTTP_FAST, **fields}, timeout=30)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == param and rule in error["message"], error


def test_the_original_image_route_and_the_openai_api_take_them_too(server_url) -> None:
    query = {
        "prompt": "a red cube",
        "size": 32,
        "negative_prompt": "fog",
        "guidance_interval": "0,0.5",
        "preset": "fast",
    }
    body = requests.get(f"{server_url}/image", params=query, timeout=60).json()
    metadata = read_png_metadata(base64.b64decode(body["images"][0]))
    assert (metadata["negative_prompt"], metadata["guidance_interval"]) == ("fog", [0.0, 0.5])
    assert metadata["base_respacing"] == PRESETS["fast"].values["steps"]

    fields = {"prompt": "a red cube", "size": "32x32", "steps": "3", "negative_prompt": "fog"}
    r = requests.post(f"{server_url}/v1/images/generations", json=fields, timeout=60)
    assert read_png_metadata(base64.b64decode(r.json()["data"][0]["b64_json"]))["negative_prompt"] == "fog"
