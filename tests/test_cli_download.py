"""`glide-api download` and `glide-api models`, with the registry pointed at a local server."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
import torch
from http_fixture import FileServer

from glide_api.cli import main
from glide_api.models import registry
from glide_api.models.official_files import is_cached
from glide_api.models.weights_source import WeightsSource


def pt_bytes(seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    buffer = io.BytesIO()
    torch.save({"w": torch.randn(4, 3, generator=g), "b": torch.zeros(4)}, buffer)
    return buffer.getvalue()


# Stand-ins for the GPT-2 files; the registry's pinned hashes are pointed at them below.
TOKENIZER = {"encoder.json": b'{"!": 0}', "vocab.bpe": b"#version: 0.2\n"}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("GLIDE_API_CACHE", str(folder))
    monkeypatch.delenv("GLIDE_API_OFFLINE", raising=False)
    monkeypatch.delenv("GLIDE_API_BASE_URL", raising=False)
    pins = {f"gpt2/{name}": hashlib.sha256(data).hexdigest() for name, data in TOKENIZER.items()}
    pinned = {
        name: dataclasses.replace(e, sha256=pins.get(name, e.sha256)) for name, e in registry.REGISTRY.items()
    }
    monkeypatch.setattr(registry, "REGISTRY", MappingProxyType(pinned))
    return folder


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    files = {registry.REGISTRY[name].filename: pt_bytes(i) for i, name in enumerate(registry.CHECKPOINTS)}
    with FileServer({**files, **TOKENIZER}) as s:
        monkeypatch.setenv("GLIDE_API_BASE_URL", s.url)
        yield s


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_download_fetches_base_upsample_and_tokenizer_and_prints_where_they_went(
    server: FileServer, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["download", "--no-progress"]) == 0
    out = capsys.readouterr().out
    for name in (
        "base.pt",
        "base.safetensors",
        "upsample.pt",
        "upsample.safetensors",
        "encoder.json",
        "vocab.bpe",
    ):
        assert (cache / name).is_file(), name
        assert str(cache / name) in out, name
    assert f"cache: {cache}" in out
    assert not (cache / "base_inpaint.pt").exists()
    assert sorted(r.path for r in server.requests) == [
        "/base.pt",
        "/encoder.json",
        "/upsample.pt",
        "/vocab.bpe",
    ]


def test_download_all_into_a_given_cache_dir_skips_conversion_on_request(
    server: FileServer, cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    assert main(["download", "all", "--cache-dir", str(other), "--no-convert"]) == 0
    assert sorted(p.name for p in other.glob("*.pt")) == [
        "base.pt",
        "base_inpaint.pt",
        "upsample.pt",
        "upsample_inpaint.pt",
    ]
    assert list(other.glob("*.safetensors")) == []
    assert not cache.exists()
    assert f"cache: {other}" in capsys.readouterr().out


def test_download_of_a_cached_file_makes_no_request(server: FileServer) -> None:
    assert main(["download", "base", "--no-progress"]) == 0
    seen = len(server.requests)
    assert main(["download", "base", "--no-progress"]) == 0
    assert len(server.requests) == seen


def test_models_lists_cached_files_with_size_conversion_and_hash(
    server: FileServer, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["download", "base", "--no-progress"])
    main(["download", "upsample", "--no-convert", "--no-progress"])
    capsys.readouterr()
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert f"cache: {cache}" in out
    digest = hashlib.sha256((cache / "base.pt").read_bytes()).hexdigest()
    (base_line,) = [line for line in out.splitlines() if line.startswith("base ")]
    assert "yes" in base_line and digest[:16] in base_line
    (upsample_line,) = [line for line in out.splitlines() if line.startswith("upsample ")]
    assert " no " in upsample_line
    assert "not cached: base-inpaint, upsample-inpaint" in out


def test_models_with_an_empty_cache_says_how_to_fetch(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "Nothing is cached" in out and "glide-api download" in out and str(cache) in out
    assert not cache.exists()


def test_download_of_a_model_fetches_the_tokenizer_files_it_needs_first(
    server: FileServer, cache: Path
) -> None:
    assert main(["download", "base", "--no-progress"]) == 0
    assert [r.path for r in server.requests] == ["/encoder.json", "/vocab.bpe", "/base.pt"]
    assert all((cache / name).is_file() for name in ("encoder.json", "vocab.bpe", "base.safetensors"))


def test_unreachable_server_says_to_run_the_same_command_again_and_names_the_demo(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GLIDE_API_BASE_URL", closed_port_url())
    assert main(["download", "base"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("glide-api: error: downloading encoder.json failed: cannot reach ")
    assert "run this command again" in err and "glide-api serve --model demo works offline now" in err
    assert "download tokenizer" not in err  # no second command to go round in circles with
    assert "Traceback" not in err


def test_offline_download_in_a_real_process_fails_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "GLIDE_API_CACHE": str(tmp_path / "c"), "GLIDE_API_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "glide_api.cli", "download", "base"],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[1],
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "GLIDE_API_OFFLINE" in lines[0] and "glide-api serve --model demo" in lines[0]
    assert "Traceback" not in done.stderr


def test_unknown_name_is_rejected_before_any_download(
    server: FileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["download", "base", "nonsense"]) == 1
    err = capsys.readouterr().err
    assert "unknown name 'nonsense'" in err and "upsample-inpaint" in err
    assert server.requests == []


def test_version_and_bare_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("glide-api ")
    assert main([]) == 2


def test_download_names_put_the_tokenizer_first_expand_groups_and_drop_repeats() -> None:
    assert registry.download_names(registry.DEFAULT_DOWNLOADS) == [
        *registry.TOKENIZER_FILES,
        "base",
        "upsample",
    ]
    assert registry.download_names(["upsample", "all", "tokenizer"]) == [
        *registry.TOKENIZER_FILES,
        "upsample",
        *(n for n in registry.CHECKPOINTS if n != "upsample"),
    ]
    with pytest.raises(ValueError, match="unknown name 'nonsense'"):
        registry.download_names(["nonsense"])


def test_is_cached_looks_for_the_downloaded_file_itself(cache: Path) -> None:
    assert not is_cached("base", source=WeightsSource(cache=cache))
    cache.mkdir()
    (cache / "base.safetensors").write_bytes(b"")  # a conversion alone is not the download
    assert not is_cached("base", source=WeightsSource.from_env())
    (cache / "base.pt").write_bytes(b"")
    assert is_cached("base", source=WeightsSource.from_env()) and is_cached(
        "base", source=WeightsSource(cache=cache)
    )
