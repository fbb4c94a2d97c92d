"""The weights modules and the downloader, against a local HTTP server (no internet, no user cache)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from golden import GOLDEN_DIR
from http_fixture import FileServer

from glide_api.download import download, sha256_file, verify_file
from glide_api.errors import ChecksumMismatch, DownloadError, WeightsNotFound
from glide_api.models import registry
from glide_api.models.config import ModelConfig
from glide_api.models.model_folders import read_model_folder, save_model_folder
from glide_api.models.official_files import (
    MissingWeights,
    cached_models,
    fetch_checkpoint,
    fetch_file,
    load_checkpoint,
    missing_weights,
    tokenizer_files,
)
from glide_api.models.resolve import resolve_model
from glide_api.models.tensor_files import convert_checkpoint
from glide_api.models.tokenizer import gpt2_files_in
from glide_api.models.weights_source import WeightsSource, default_cache_dir


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache for each test; the weights' environment variables cleared."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("GLIDE_API_CACHE", str(folder))
    monkeypatch.delenv("GLIDE_API_OFFLINE", raising=False)
    monkeypatch.delenv("GLIDE_API_BASE_URL", raising=False)
    return folder


def fake_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "time_embed.0.weight": torch.randn(8, 4, generator=g),
        "time_embed.0.bias": torch.randn(8, generator=g),
        "token_embedding.weight": torch.randn(16, 4, generator=g),
        "steps": torch.tensor([1, 2, 3], dtype=torch.int64),
    }


def pt_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


BLOB = os.urandom(3 * 1024 * 1024 + 123)  # many times the downloader's read size


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer({"blob.bin": BLOB, "base.pt": pt_bytes(fake_state_dict())}) as s:
        yield s


def env_source(**options: object) -> WeightsSource:
    """`WeightsSource.from_env` (the test's private cache), with `options` given."""
    return WeightsSource.from_env(**options)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more: connection refused


# ---- registry and cache folder -------------------------------------------------------------


def test_registry_names_official_files_urls_and_presets() -> None:
    assert registry.CHECKPOINTS == ("base", "upsample", "base-inpaint", "upsample-inpaint")
    base = registry.REGISTRY["base-inpaint"]
    assert base.url == "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/base_inpaint.pt"
    assert base.filename == "base_inpaint.pt"
    assert base.converted_name == "base_inpaint.safetensors"
    for name in registry.CHECKPOINTS:
        assert ModelConfig.preset(registry.REGISTRY[name].preset).kind == name
    assert registry.REGISTRY["clip/text-enc"].filename == "clip_text_enc.pt"
    assert registry.REGISTRY["clip/text-enc"].preset is None
    encoder = registry.REGISTRY["gpt2/encoder.json"]
    assert encoder.url.endswith("/gpt-2/encodings/main/encoder.json")
    assert encoder.sha256 == "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


def test_base_url_argument_or_env_points_every_file_at_a_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = registry.REGISTRY["upsample"]
    assert entry.download_url("http://mirror/glide/") == "http://mirror/glide/upsample.pt"
    assert entry.download_url(None) == entry.url
    assert env_source(base_url="http://mirror/glide/").base_url == "http://mirror/glide/"
    monkeypatch.setenv("GLIDE_API_BASE_URL", "http://env-mirror")
    assert entry.download_url(env_source().base_url) == "http://env-mirror/upsample.pt"


def test_the_environment_is_read_when_a_source_is_built_and_only_by_from_env(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    built = env_source()
    assert (built.cache, built.base_url, built.offline) == (cache, None, False)
    monkeypatch.setenv("GLIDE_API_OFFLINE", "yes")
    monkeypatch.setenv("GLIDE_API_BASE_URL", "http://env-mirror")
    assert not built.offline and built.base_url is None  # a built source never changes
    assert env_source(offline=False).offline  # GLIDE_API_OFFLINE wins over offline=False
    assert env_source(base_url="http://arg").base_url == "http://arg"
    assert env_source(cache=tmp_path / "other").cache == tmp_path / "other"
    direct = WeightsSource(cache=tmp_path)
    assert (direct.base_url, direct.offline) == (None, False)  # built directly: no environment


def test_cache_dir_comes_from_env_and_is_not_created(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_cache_dir() == cache
    assert env_source().cache == cache
    assert not cache.exists()
    monkeypatch.delenv("GLIDE_API_CACHE")
    assert default_cache_dir().name == "glide-api"


def test_importing_the_weights_modules_and_cli_creates_no_folders(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GLIDE_API_CACHE": str(tmp_path / "c"),
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
    }
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import glide_api.models.resolve, glide_api.models.weights_source, glide_api.cli",
        ],
        check=True,
        env=env,
        cwd=Path(__file__).parents[1],
    )
    assert list(tmp_path.iterdir()) == []


# ---- download ------------------------------------------------------------------------------


def test_download_writes_exact_bytes_and_records_their_sha256(server: FileServer, tmp_path: Path) -> None:
    dest = download(f"{server.url}/blob.bin", tmp_path / "d" / "blob.bin", progress=False)
    assert dest.read_bytes() == BLOB
    record = json.loads((tmp_path / "d" / "blob.bin.sha256.json").read_text())
    assert record["sha256"] == sha256_file(dest)
    assert record["size"] == len(BLOB)
    assert sorted(p.name for p in dest.parent.iterdir() if not p.name.endswith(".lock")) == [
        "blob.bin",
        "blob.bin.sha256.json",
    ]


def test_interrupted_transfer_raises_download_error_and_keeps_only_the_part(
    server: FileServer, tmp_path: Path
) -> None:
    server.drop_next_after(1_500_000)
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match="run again to resume"):
        download(f"{server.url}/blob.bin", dest, progress=False)
    assert not dest.exists()
    part = tmp_path / "blob.bin.part"
    assert 0 < part.stat().st_size < len(BLOB)


def test_resume_after_interrupted_transfer_continues_from_the_part_with_a_range_request(
    server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "blob.bin"
    server.drop_next_after(1_500_000)
    with pytest.raises(DownloadError):
        download(f"{server.url}/blob.bin", dest, progress=False)
    kept = (tmp_path / "blob.bin.part").stat().st_size

    download(f"{server.url}/blob.bin", dest, progress=False)

    second = server.requests_for("/blob.bin")[1]
    assert second.headers["Range"] == f"bytes={kept}-"
    assert "If-Range" in second.headers  # guards against the remote file having changed
    assert dest.read_bytes() == BLOB
    assert verify_file(dest, rehash=True) == sha256_file(dest)
    assert not (tmp_path / "blob.bin.part").exists()


def test_server_ignoring_range_makes_the_download_start_over(server: FileServer, tmp_path: Path) -> None:
    (tmp_path / "blob.bin.part").write_bytes(b"garbage that must not survive")
    server.ignore_range = True
    dest = download(f"{server.url}/blob.bin", tmp_path / "blob.bin", progress=False)
    assert server.requests_for("/blob.bin")[0].headers["Range"] == "bytes=29-"
    assert dest.read_bytes() == BLOB


def test_remote_file_changed_since_the_part_was_started_restarts_from_zero(
    server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "blob.bin"
    server.drop_next_after(1_500_000)
    with pytest.raises(DownloadError):
        download(f"{server.url}/blob.bin", dest, progress=False)
    new = os.urandom(len(BLOB))
    server.files["blob.bin"] = new  # its ETag no longer matches the one the .part was started with
    download(f"{server.url}/blob.bin", dest, progress=False)
    assert dest.read_bytes() == new


def test_416_for_a_complete_part_finishes_without_transferring_again(
    server: FileServer, tmp_path: Path
) -> None:
    (tmp_path / "blob.bin.part").write_bytes(BLOB)  # stopped after the transfer, before the rename
    dest = download(f"{server.url}/blob.bin", tmp_path / "blob.bin", progress=False)
    assert dest.read_bytes() == BLOB
    assert len(server.requests_for("/blob.bin")) == 1


def test_416_for_a_part_longer_than_the_file_starts_over(server: FileServer, tmp_path: Path) -> None:
    (tmp_path / "blob.bin.part").write_bytes(BLOB + b"stale tail")
    dest = download(f"{server.url}/blob.bin", tmp_path / "blob.bin", progress=False)
    assert dest.read_bytes() == BLOB
    assert [("Range" in r.headers) for r in server.requests_for("/blob.bin")] == [True, False]


def test_wrong_pinned_hash_raises_checksum_mismatch_and_leaves_no_file(
    server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "blob.bin"
    with pytest.raises(ChecksumMismatch, match="expected 0000"):
        download(f"{server.url}/blob.bin", dest, sha256="0" * 64, progress=False)
    assert not dest.exists()
    assert not (tmp_path / "blob.bin.part").exists()


def test_404_raises_download_error_naming_url_and_status_and_leaves_nothing(
    server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "missing.bin"
    with pytest.raises(DownloadError, match=r"/missing\.bin: HTTP 404"):
        download(f"{server.url}/missing.bin", dest, progress=False)
    assert not dest.exists()
    assert not (tmp_path / "missing.bin.part").exists()


def test_two_concurrent_downloads_of_one_file_transfer_it_once(
    server: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="glide_api")
    server.chunk_delay = 0.005  # ~0.25 s transfer: the second caller arrives while it runs
    dest = tmp_path / "blob.bin"
    start = threading.Barrier(2)
    results: list[Path | BaseException] = []

    def fetch() -> None:
        start.wait()
        try:
            results.append(download(f"{server.url}/blob.bin", dest, progress=False))
        except BaseException as e:  # reported below, not lost in the thread
            results.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [dest, dest]
    assert "waiting for another process" in caplog.text  # the second one really waited
    assert len(server.requests_for("/blob.bin")) == 1
    assert dest.read_bytes() == BLOB


def test_verify_file_rehash_catches_a_change_that_kept_size_and_mtime(
    server: FileServer, tmp_path: Path
) -> None:
    dest = download(f"{server.url}/blob.bin", tmp_path / "blob.bin", progress=False)
    st = dest.stat()
    dest.write_bytes(bytes(len(BLOB)))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    verify_file(dest)  # trusted by size and mtime: the documented cost trade-off
    with pytest.raises(ChecksumMismatch, match="changed since"):
        verify_file(dest, rehash=True)


# ---- fetching official files ------------------------------------------------------------------


def test_cache_hit_makes_no_network_call_even_with_the_server_down(server: FileServer) -> None:
    path = fetch_file("base", source=env_source(base_url=server.url, progress=False))
    seen = len(server.requests)
    assert fetch_file("base", source=env_source(base_url=server.url)) == path
    assert len(server.requests) == seen
    server.stop()
    assert fetch_file("base", source=env_source(base_url=server.url)) == path
    assert fetch_file("base", source=env_source(offline=True)) == path


def test_offline_with_nothing_cached_raises_one_line_weights_not_found(
    server: FileServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(WeightsNotFound) as info:
        fetch_checkpoint("base", source=env_source(base_url=server.url, offline=True))
    message = str(info.value)
    assert "base.pt" in message and str(cache) in message
    assert "glide-api download base" in message
    assert "\n" not in message
    monkeypatch.setenv("GLIDE_API_OFFLINE", "1")
    with pytest.raises(WeightsNotFound, match="glide-api download base"):
        load_checkpoint("base", source=env_source(base_url=server.url))
    assert server.requests == []


def test_unreachable_server_raises_weights_not_found_with_the_fetch_command(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    with pytest.raises(WeightsNotFound) as info:
        fetch_file("upsample", source=env_source(cache=other, base_url=closed_port_url(), progress=False))
    message = str(info.value)
    assert "upsample.pt" in message and str(other) in message
    assert f"glide-api download upsample --cache-dir {other}" in message
    assert "\n" not in message
    assert not (other / "upsample.pt.part").exists()


def test_pt_is_converted_to_safetensors_once_and_then_loaded_from_it(
    server: FileServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_checkpoint("base", source=env_source(base_url=server.url, progress=False))
    assert_same_tensors(first, fake_state_dict())
    converted = cache / "base.safetensors"
    assert converted.is_file()
    assert converted.stat().st_mode & 0o777 == (cache / "base.pt").stat().st_mode & 0o777
    mtime = converted.stat().st_mtime_ns

    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("the .pt was read again")

    monkeypatch.setattr(torch, "load", no_pickle)
    second = load_checkpoint("base", source=env_source(base_url=server.url))
    assert_same_tensors(second, fake_state_dict())
    assert converted.stat().st_mtime_ns == mtime
    assert len(server.requests) == 1


def test_changed_pt_is_detected_on_load(server: FileServer, cache: Path) -> None:
    load_checkpoint("base", source=env_source(base_url=server.url, progress=False))
    pt = cache / "base.pt"
    pt.write_bytes(pt_bytes(fake_state_dict(seed=1)))
    with pytest.raises(ChecksumMismatch, match=r"base\.pt changed since"):
        load_checkpoint("base", source=env_source(base_url=server.url))


def test_replaced_pt_without_a_record_is_converted_again(server: FileServer, cache: Path) -> None:
    load_checkpoint("base", source=env_source(base_url=server.url, progress=False))
    (cache / "base.pt").write_bytes(pt_bytes(fake_state_dict(seed=2)))
    (cache / "base.pt.sha256.json").unlink()  # e.g. a user copied in a file by hand
    assert_same_tensors(load_checkpoint("base", source=env_source()), fake_state_dict(seed=2))


def test_pinned_hash_is_checked_on_download_and_on_load(server: FileServer, cache: Path) -> None:
    good = sha256_of(server.files["base.pt"])
    with pytest.raises(ChecksumMismatch):
        fetch_checkpoint("base", source=env_source(base_url=server.url, progress=False), sha256="f" * 64)
    assert not (cache / "base.pt").exists()
    fetch_checkpoint("base", source=env_source(base_url=server.url, progress=False), sha256=good)
    with pytest.raises(ChecksumMismatch):
        fetch_checkpoint("base", source=env_source(), sha256="f" * 64)


def test_conversion_is_used_when_its_pt_was_deleted(server: FileServer, cache: Path) -> None:
    good = sha256_of(server.files["base.pt"])
    fetch_checkpoint("base", source=env_source(base_url=server.url, progress=False))
    (cache / "base.pt").unlink()
    server.stop()
    assert_same_tensors(
        load_checkpoint("base", source=env_source(offline=True), sha256=good), fake_state_dict()
    )
    with pytest.raises(ChecksumMismatch):
        fetch_checkpoint("base", source=env_source(), sha256="f" * 64)


def test_conversion_reads_pre_zip_format_checkpoints(tmp_path: Path) -> None:
    pt = tmp_path / "old.pt"
    torch.save(fake_state_dict(), pt, _use_new_zipfile_serialization=False)
    from safetensors.torch import load_file

    assert_same_tensors(load_file(convert_checkpoint(pt)), fake_state_dict())


def test_conversion_refuses_a_file_that_is_not_a_flat_state_dict(tmp_path: Path) -> None:
    pt = tmp_path / "nested.pt"
    torch.save({"model": fake_state_dict(), "step": 3}, pt)
    with pytest.raises(ValueError, match="flat state_dict"):
        convert_checkpoint(pt)
    assert not (tmp_path / "nested.safetensors").exists()


def test_conversion_gives_tied_weights_their_own_storage(tmp_path: Path) -> None:
    shared = torch.arange(6.0)
    pt = tmp_path / "tied.pt"
    torch.save({"a": shared, "b": shared, "view": shared[2:]}, pt)
    out = convert_checkpoint(pt)
    from safetensors.torch import load_file

    loaded = load_file(out)
    assert torch.equal(loaded["b"], shared) and torch.equal(loaded["view"], shared[2:])


# ---- tokenizer files ------------------------------------------------------------------------


def test_tokenizer_files_are_downloaded_once_and_match_the_pinned_hashes() -> None:
    files = {
        name: gzip.decompress((GOLDEN_DIR / f"{name}.gz").read_bytes())
        for name in ("encoder.json", "vocab.bpe")
    }
    with FileServer(files) as s:
        enc, bpe = tokenizer_files(source=env_source(base_url=s.url, progress=False))
        assert enc.read_bytes() == files["encoder.json"]
        assert bpe.read_bytes() == files["vocab.bpe"]
        assert tokenizer_files(source=env_source(base_url=s.url)) == (enc, bpe)
        assert len(s.requests) == 2


def test_tokenizer_with_wrong_bytes_is_rejected(cache: Path) -> None:
    with FileServer({"encoder.json": b"{}", "vocab.bpe": b"#"}) as s, pytest.raises(ChecksumMismatch):
        tokenizer_files(source=env_source(base_url=s.url, progress=False))
    assert not (cache / "encoder.json").exists()


def test_tokenizer_files_come_from_a_folder_that_holds_both(tmp_path: Path) -> None:
    (tmp_path / "encoder.json").write_text("{}")
    (tmp_path / "vocab.bpe").write_text("#")
    assert gpt2_files_in(tmp_path) == (
        tmp_path / "encoder.json",
        tmp_path / "vocab.bpe",
    )
    (tmp_path / "vocab.bpe").unlink()
    with pytest.raises(WeightsNotFound, match=r"vocab\.bpe is missing"):
        gpt2_files_in(tmp_path)


# ---- model folders and specs -------------------------------------------------------------------

SMALL = ModelConfig.preset("base").replace(
    image_size=32, channel_mult="1,2,2", num_channels=64, xf_layers=2, text_ctx=16
)


def test_model_folder_round_trip(tmp_path: Path) -> None:
    folder = save_model_folder(tmp_path / "mine", config=SMALL, state_dict=fake_state_dict())
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config, state_dict = read_model_folder(folder)
    assert config == SMALL
    assert_same_tensors(state_dict, fake_state_dict())


def test_model_folder_with_pt_weights_is_read(tmp_path: Path) -> None:
    folder = save_model_folder(tmp_path / "mine", config=SMALL, state_dict={})
    (folder / "model.safetensors").unlink()
    torch.save(fake_state_dict(), folder / "model.pt")
    assert_same_tensors(read_model_folder(folder)[1], fake_state_dict())


def test_model_folder_without_config_is_a_clear_error(tmp_path: Path) -> None:
    folder = save_model_folder(tmp_path / "mine", config=SMALL, state_dict=fake_state_dict())
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match=r"not a model folder: config\.json is missing"):
        read_model_folder(folder)


def test_model_folder_without_weights_raises_weights_not_found(tmp_path: Path) -> None:
    folder = save_model_folder(tmp_path / "mine", config=SMALL, state_dict=fake_state_dict())
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsNotFound, match=r"model\.safetensors or model\.pt"):
        read_model_folder(folder)
    with pytest.raises(WeightsNotFound, match="does not exist"):
        read_model_folder(tmp_path / "nowhere")


def test_resolve_model_takes_official_names_and_folders(server: FileServer, tmp_path: Path) -> None:
    config, state_dict = resolve_model("base", source=env_source(base_url=server.url, progress=False))
    assert config == ModelConfig.preset("base")
    assert_same_tensors(state_dict, fake_state_dict())
    folder = save_model_folder(tmp_path / "tuned", config=SMALL, state_dict=fake_state_dict(3))
    config, state_dict = resolve_model(str(folder), source=env_source())
    assert config == SMALL
    assert_same_tensors(state_dict, fake_state_dict(3))


def test_resolve_model_rejects_unknown_names_listing_the_official_ones() -> None:
    with pytest.raises(ValueError, match="base, upsample, base-inpaint, upsample-inpaint"):
        resolve_model("no-such-model", source=env_source())
    with pytest.raises(ValueError, match="download-only"):
        resolve_model("clip/image-enc", source=env_source())


# ---- listing the cache -------------------------------------------------------------------------


def test_cached_models_lists_downloaded_converted_and_partial_files(server: FileServer, cache: Path) -> None:
    assert cached_models(source=env_source()) == []
    server.files["upsample.pt"] = pt_bytes(fake_state_dict(4))
    fetch_checkpoint("base", source=env_source(base_url=server.url, progress=False))
    fetch_file("upsample", source=env_source(base_url=server.url, progress=False))
    (cache / "base_inpaint.pt.part").write_bytes(b"12345")
    listed = {c.name: c for c in cached_models(source=env_source())}
    assert list(listed) == ["base", "upsample", "base-inpaint"]
    assert listed["base"].converted == cache / "base.safetensors"
    assert listed["base"].sha256 == sha256_file(cache / "base.pt")
    assert listed["base"].size == (cache / "base.pt").stat().st_size
    assert listed["upsample"].converted is None
    assert listed["base-inpaint"].partial and listed["base-inpaint"].size == 5


def test_missing_weights_lists_each_missing_file_once_with_one_command_that_fetches_all(tmp_path) -> None:
    from glide_api.demo import DEMO_MODELS

    cache = tmp_path / "not-the-default-cache"
    source = WeightsSource(cache=cache)
    folder = tmp_path / "folder"  # a model folder without a tokenizer of its own
    folder.mkdir()
    absent = str(tmp_path / "absent")
    missing = missing_weights(["base", None, "upsample", absent, str(folder)], source=source)
    assert [Path(f).name for f in missing.files] == [
        "encoder.json",
        "vocab.bpe",
        "base.pt",
        "upsample.pt",
        "absent",
    ]
    assert missing.command == f"glide-api download base upsample --cache-dir {cache}"
    only_tokenizer = missing_weights([str(folder)], source=source)
    assert only_tokenizer.command == f"glide-api download tokenizer --cache-dir {cache}"
    assert missing_weights([str(DEMO_MODELS["demo-base"])], source=source) == MissingWeights(
        cache_option=f" --cache-dir {cache}"
    )
    both = only_tokenizer + missing_weights(["base-inpaint"], source=source)
    assert both.command == f"glide-api download base-inpaint --cache-dir {cache}"
    assert len(both.files) == len(set(both.files)) == 3
