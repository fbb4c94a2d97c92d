"""Readiness per capability over real HTTP: text-to-image is served as soon as its models are
loaded, whatever happens to the inpainting models; `/readyz`, `/v1/models` and the errors say per
capability what is ready, loading, missing or off, and offline they point at the demo."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from conftest import running
from golden import write_tokenizer_files
from http_fixture import FileServer
from PIL import Image

from glide_api.config import ServiceConfig
from glide_api.server import create_app

STEPS = {"base_steps": "2", "upsample_steps": "2"}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def inpaint(url: str) -> requests.Response:
    mask = Image.new("L", (32, 32), 255)
    mask.paste(0, (0, 0, 32, 8))
    return requests.post(
        f"{url}/v1/inpaint",
        data={"prompt": "a sun", "size": "32"},
        files={
            "image": ("in.png", png(Image.new("RGB", (32, 32), (10, 200, 10))), "image/png"),
            "mask": ("mask.png", png(mask), "image/png"),
        },
        timeout=60,
    )


@contextmanager
def serving(config: ServiceConfig, *, loaded: bool = True) -> Iterator[str]:
    """The app with `config`, loading its own models, over HTTP; with `loaded`, once the loader is done."""
    app = create_app(config)
    with running(app) as url:
        if loaded:
            app.extensions["glide_api"]._loader.join(timeout=60)
        yield url


def text2im_folders(dirs: dict[str, Path]) -> dict[str, str]:
    """The small base model alone (32 px), which loads and samples fastest."""
    return {"base": str(dirs["small-base"]), "upsample": "none"}


def test_text_to_image_is_served_while_the_inpainting_models_are_missing(small_model_dirs, tmp_path) -> None:
    cache = tmp_path / "empty-cache"
    config = ServiceConfig(offline=True, cache_dir=str(cache), **text2im_folders(small_model_dirs), **STEPS)
    with serving(config) as url:
        r = requests.get(f"{url}/readyz", timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        text2im, inpainting = body["capabilities"]["text2im"], body["capabilities"]["inpaint"]
        assert text2im["state"] == "ready" and text2im["models"]["base"].endswith("small-base")
        assert inpainting["state"] == "missing"
        assert [Path(f).name for f in inpainting["missing"]] == [
            "encoder.json",
            "vocab.bpe",
            "base_inpaint.pt",
            "upsample_inpaint.pt",
        ]
        command = f"glide-api download base-inpaint upsample-inpaint --cache-dir {cache}"
        assert inpainting["command"] == body["command"] == command
        assert inpainting["advice"] is None and body["advice"] is None  # the demo cannot inpaint
        assert body["reason"] == "inpainting: model files are missing: downloads are off (offline)"

        job = requests.post(f"{url}/v1/generations", json={"prompt": "x", "size": 32}, timeout=60)
        assert job.status_code == 200 and job.json()["status"] == "succeeded", job.text

        r = inpaint(url)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) == 30
        message = r.json()["error"]["message"]
        assert "inpainting" in message and str(cache / "base_inpaint.pt") in message and command in message

        models = requests.get(f"{url}/v1/models", timeout=10).json()
        assert models["ready"] and set(models["models"]) == {"base"}
        assert {t: c["state"] for t, c in models["capabilities"].items()} == {
            "text2im": "ready",
            "inpaint": "missing",
        }
        assert requests.get(f"{url}/v1/settings", timeout=10).json()["sizes"]["inpaint"] == []
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert 'glide_capability_ready{capability="text2im"} 1.0' in metrics
        assert 'glide_capability_ready{capability="inpaint"} 0.0' in metrics


def test_inpainting_configured_off_is_a_400_and_off_in_readyz(small_model_dirs, tmp_path) -> None:
    config = ServiceConfig(
        offline=True,
        cache_dir=str(tmp_path),
        base_inpaint="none",
        upsample_inpaint="none",
        **text2im_folders(small_model_dirs),
        **STEPS,
    )
    with serving(config) as url:
        body = requests.get(f"{url}/readyz", timeout=10).json()
        assert body["capabilities"]["inpaint"]["state"] == "off"
        assert body["ready"] and body["reason"] is None and body["missing"] == [] and body["command"] is None
        r = inpaint(url)
        assert r.status_code == 400 and "base_inpaint is 'none'" in r.json()["error"]["message"], r.text


def test_offline_with_nothing_cached_names_every_file_one_command_and_the_demo(tmp_path, caplog) -> None:
    config = ServiceConfig(offline=True, cache_dir=str(tmp_path))
    with caplog.at_level(logging.ERROR, logger="glide_api"), serving(config) as url:
        r = requests.get(f"{url}/readyz", timeout=10)
        assert r.status_code == 503
        body = r.json()
        assert {t: c["state"] for t, c in body["capabilities"].items()} == {
            "text2im": "missing",
            "inpaint": "missing",
        }
        # One command fetches everything, in order (the tokenizer files come first by themselves).
        assert body["command"] == (
            f"glide-api download base upsample base-inpaint upsample-inpaint --cache-dir {tmp_path}"
        )
        assert [Path(f).name for f in body["missing"]] == [
            "encoder.json",
            "vocab.bpe",
            "base.pt",
            "upsample.pt",
            "base_inpaint.pt",
            "upsample_inpaint.pt",
        ]
        assert "glide-api serve --model demo" in body["advice"] and "offline" in body["advice"]
        assert body["capabilities"]["text2im"]["advice"] == body["advice"]
        r = requests.post(f"{url}/v1/generations", json={"prompt": "x"}, timeout=10)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) == 30
        assert "base.pt" in r.json()["error"]["message"]
    logged = [record.getMessage() for record in caplog.records]
    assert any("text-to-image not ready" in m and "glide-api serve --model demo" in m for m in logged)


def test_inpainting_models_join_the_running_pipeline_once_loaded(small_model_dirs, tmp_path) -> None:
    d = {name: str(path) for name, path in small_model_dirs.items()}
    config = ServiceConfig(
        offline=True,
        cache_dir=str(tmp_path),
        base=d["small-base"],
        upsample="none",
        base_inpaint=d["small-base-inpaint"],
        upsample_inpaint="none",
        **STEPS,
    )
    with serving(config) as url:
        body = requests.get(f"{url}/readyz", timeout=10).json()
        assert {t: c["state"] for t, c in body["capabilities"].items()} == {
            "text2im": "ready",
            "inpaint": "ready",
        }
        assert body["reason"] is None
        r = inpaint(url)
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
        assert requests.get(f"{url}/v1/settings", timeout=10).json()["sizes"]["inpaint"] == [32]


def test_text_to_image_is_served_while_the_inpainting_model_still_downloads(
    small_model_dirs, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    write_tokenizer_files(cache)  # the real GPT-2 files: their pinned hashes match
    with FileServer({"base_inpaint.pt": bytes(2 << 20)}) as mirror:
        mirror.chunk_delay = 0.5  # 32 chunks of 64 KiB: the download lasts about 16 s
        monkeypatch.setenv("GLIDE_API_BASE_URL", mirror.url)
        config = ServiceConfig(
            cache_dir=str(cache), upsample_inpaint="none", **text2im_folders(small_model_dirs), **STEPS
        )
        with serving(config, loaded=False) as url:
            deadline = time.monotonic() + 30
            while True:
                body = requests.get(f"{url}/readyz", timeout=10).json()
                if body["capabilities"]["inpaint"]["reason"].startswith("downloading base_inpaint.pt"):
                    break
                assert time.monotonic() < deadline, body
                time.sleep(0.1)
            assert body["ready"] and body["capabilities"]["text2im"]["state"] == "ready"
            assert body["capabilities"]["inpaint"]["state"] == "loading"
            r = requests.get(f"{url}/readyz", timeout=10)
            assert r.status_code == 200
            job = requests.post(f"{url}/v1/generations", json={"prompt": "x", "size": 32}, timeout=60)
            assert job.status_code == 200 and job.json()["status"] == "succeeded", job.text
            r = inpaint(url)
            assert r.status_code == 503 and int(r.headers["Retry-After"]) == 5
            assert "downloading base_inpaint.pt" in r.json()["error"]["message"]
            mirror.chunk_delay = 0  # let the download end (the zeros then fail to load)
