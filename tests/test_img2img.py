"""Image-to-image and OpenAI variations: a picture noised to `strength` and sampled from there, in
the library, over `POST /v1/img2img`, the official `openai` client's `images.create_variation`, the
Python client and `glide-api img2img`, with the golden small models (base 32, upsampler 64)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests
from PIL import Image

from glide_api.cli import main
from glide_api.client import BadRequest, GlideClient
from glide_api.options import STRENGTH
from glide_api.pipeline.images import read_png_metadata
from glide_api.pipeline.outputs import StageProgress
from glide_api.pipeline.params import BatchSettings, GenerationRequest, Sample

FAST = {"base_respacing": "6", "upsample_respacing": "4"}  # base timesteps 0, 200, …, 800, 999
HTTP_FAST = {"steps": "6", "upsample_steps": "4"}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def stripes(width: int, height: int) -> Image.Image:
    data = np.zeros((height, width, 3), dtype=np.uint8)
    data[:, :, 0] = (np.arange(width) * 255 // max(1, width - 1))[None, :]
    data[::4, :, 1] = 200
    return Image.fromarray(data, mode="RGB")


def img2img(pipeline, picture: bytes, strength: float, *, size: int = 32, seed: int = 3):
    request = GenerationRequest.create(
        "a red cube", size=size, seed=seed, task="img2img", strength=strength, image=picture, **FAST
    )
    return pipeline.generate(request)


def test_strength_zero_returns_the_picture_at_the_asked_size(small_pipeline) -> None:
    picture = stripes(40, 40)
    for size in (32, 64):
        out = img2img(small_pipeline, png(picture), 0.0, size=size)
        expected = picture.resize((size, size), Image.Resampling.BICUBIC)
        assert out.images[0].image.tobytes() == expected.tobytes(), size


def test_strength_one_is_text_to_image_with_the_same_seed(small_pipeline) -> None:
    for size in (32, 64):
        text = GenerationRequest.create("a red cube", size=size, seed=3, **FAST)
        expected = small_pipeline.generate(text).images[0].image.tobytes()
        assert (
            img2img(small_pipeline, png(stripes(32, 32)), 1.0, size=size).images[0].image.tobytes()
            == expected
        )


def test_strength_runs_the_steps_below_it_from_the_noised_picture(small_pipeline) -> None:
    picture = png(stripes(32, 32))
    request = GenerationRequest.create(
        "a red cube", size=64, seed=3, task="img2img", strength=0.5, image=picture, **FAST
    )
    events = list(small_pipeline.stream(request.settings, request.samples()))
    totals = {e.progress.stage: e.progress.total for e in events if isinstance(e, StageProgress)}
    assert totals == {"base 32": 3, "upsample 64": 2}  # t < 500 of 0, 200, …, 999 and of 0, 333, 666, 999
    result = np.asarray(events[-1].images[0].image, dtype=np.int32)
    assert np.abs(result - np.asarray(stripes(32, 32).resize((64, 64), Image.Resampling.BICUBIC))).mean() > 2
    assert events[-1].images[0].metadata["strength"] == 0.5


def test_a_non_square_picture_is_centre_cropped(small_pipeline) -> None:
    wide = stripes(60, 30)
    out = img2img(small_pipeline, png(wide), 0.0)
    assert (
        out.images[0].image.tobytes()
        == wide.crop((15, 0, 45, 30)).resize((32, 32), Image.Resampling.BICUBIC).tobytes()
    )


def test_batch_mates_with_other_pictures_get_the_bytes_of_their_solo_runs(small_pipeline) -> None:
    settings = BatchSettings(size=64, task="img2img", strength=0.6, **FAST)
    samples = [
        Sample("a red cube", 1, image=png(stripes(32, 32))),
        Sample("sky", 2, 5.0, image=png(stripes(50, 40))),
    ]
    batch = list(small_pipeline.stream(settings, samples))[-1]
    for image, sample in zip(batch.images, samples, strict=True):
        assert image.png == list(small_pipeline.stream(settings, [sample]))[-1].images[0].png


def test_img2img_takes_an_image_and_no_mask_and_strength_only_with_it() -> None:
    with pytest.raises(ValueError, match="image: img2img needs an image"):
        GenerationRequest.create("x", size=32, task="img2img")
    with pytest.raises(ValueError, match="mask: img2img takes no mask"):
        GenerationRequest.create("x", size=32, task="img2img", image=b"png", mask=b"png")
    with pytest.raises(ValueError, match="strength: applies to img2img only"):
        BatchSettings(size=32, strength=0.5)
    with pytest.raises(ValueError, match=r"strength: must be a number in \[0, 1\]"):
        BatchSettings(size=32, task="img2img", strength=1.5)
    assert BatchSettings(size=32, task="img2img").strength == STRENGTH.default


# ---- over HTTP --------------------------------------------------------------------------------------


def test_v1_img2img_at_strength_zero_answers_the_upload(server_url) -> None:
    picture = stripes(32, 32)
    r = requests.post(
        f"{server_url}/v1/img2img",
        data={"prompt": "a red cube", "size": "32", "strength": "0", "seed": "5", **HTTP_FAST},
        files={"image": ("stripes.png", png(picture), "image/png")},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["request"]["task"] == "img2img" and job["request"]["settings"]["strength"] == 0.0
    data = requests.get(server_url + job["images"][0]["url"], timeout=30).content
    assert Image.open(io.BytesIO(data)).convert("RGB").tobytes() == picture.tobytes()


@pytest.mark.parametrize(
    ("form", "files", "param", "rule"),
    [
        ({"strength": "1.5"}, True, "strength", "less than or equal to 1"),
        ({"strength": "much"}, True, "strength", "valid number"),
        ({}, False, "image", "not a valid file"),
        ({"guidance_interval": "0.5,0.1"}, True, "guidance_interval", "0 <= lo <= hi <= 1"),
    ],
)
def test_bad_img2img_fields_are_a_400_naming_the_field(server_url, form, files, param, rule) -> None:
    upload = {"image": ("p.png", png(stripes(8, 8)), "image/png")} if files else None
    r = requests.post(
        f"{server_url}/v1/img2img", data={"prompt": "x", "size": "32", **form}, files=upload, timeout=30
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and rule.lower() in error["message"].lower(), error


def test_an_upload_that_is_no_picture_is_refused_before_it_is_queued(server_url) -> None:
    r = requests.post(
        f"{server_url}/v1/img2img",
        data={"prompt": "x", "size": "32"},
        files={"image": ("p.png", b"not a picture", "image/png")},
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "image"


def test_openai_variations_answer_n_pictures_of_the_size_in_b64_json_or_url(server_url) -> None:
    openai = pytest.importorskip("openai", reason="the openai client is a dev dependency")
    client = openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0, timeout=120)
    picture = io.BytesIO(png(stripes(64, 64)))
    picture.name = "stripes.png"
    result = client.images.create_variation(
        image=picture, n=2, size="64x64", response_format="b64_json", extra_body={**HTTP_FAST, "seed": 9}
    )
    images = [base64.b64decode(d.b64_json) for d in result.data]
    assert len(images) == 2 and all(Image.open(io.BytesIO(i)).size == (64, 64) for i in images)
    metadata = [read_png_metadata(i) for i in images]
    assert [m["seed"] for m in metadata] == [9, 10]
    assert {(m["task"], m["prompt"], m["strength"]) for m in metadata} == {("img2img", "", STRENGTH.default)}

    picture.seek(0)
    linked = client.images.create_variation(
        image=picture, size="32x32", response_format="url", extra_body=HTTP_FAST
    )
    assert requests.get(linked.data[0].url, timeout=30).headers["Content-Type"] == "image/png"


def test_a_variation_without_an_image_is_a_400_naming_it(server_url) -> None:
    r = requests.post(f"{server_url}/v1/images/variations", data={"n": "1"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "image"


def test_the_client_sends_img2img_from_a_path_with_its_strength(server_url, tmp_path) -> None:
    path = tmp_path / "stripes.png"
    path.write_bytes(png(stripes(32, 32)))
    with GlideClient(server_url, timeout=30) as client:
        job = client.img2img(
            path, "a red cube", strength=0.3, size=32, seed=4, guidance_interval=(0, 0.5), **HTTP_FAST
        )
        metadata = read_png_metadata(client.image(job))
        assert (metadata["task"], metadata["strength"], metadata["guidance_interval"]) == (
            "img2img",
            0.3,
            [0, 0.5],
        )
        with pytest.raises(BadRequest) as error:
            client.img2img(path, "x", strength=2, size=32)
        assert error.value.param == "strength"


def test_the_command_line_writes_the_redrawn_png(small_model_dirs, tmp_path, capsys) -> None:
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    source.write_bytes(png(stripes(40, 30)))
    flags = [
        "--base",
        str(small_model_dirs["small-base"]),
        "--upsample",
        str(small_model_dirs["small-upsample"]),
    ]
    args = ["img2img", str(source), "a red cube", "--strength", "0.4", "--seed", "2", "--steps", "6"]
    status = main([*args, "--upsample-steps", "2", "--out", str(out), "--no-progress", "--offline", *flags])
    assert status == 0, capsys.readouterr().err
    assert f"{out}  seed 2" in capsys.readouterr().out
    assert Image.open(out).size == (64, 64)
    metadata = read_png_metadata(out)
    assert (metadata["task"], metadata["strength"], metadata["base_respacing"]) == ("img2img", 0.4, "6")
