"""Download progress reaches the log (servers have no terminal) and the caller's callback (the UI).

The callback is passed down explicitly (`WeightsSource.on_progress` -> the fetch -> the
downloader), so it reaches only the downloads it was given to: no module-level state.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from http_fixture import FileServer

from glide_api.download import download
from glide_api.models.official_files import fetch_file
from glide_api.models.weights_source import WeightsSource

MIB = bytes(range(256)) * 4096


def test_progress_is_logged_every_tenth_and_reported_to_the_callback(tmp_path, caplog) -> None:
    data = MIB
    seen: list[tuple[str, int, int | None]] = []
    with FileServer({"base.pt": data}) as server, caplog.at_level(logging.INFO):
        download(
            f"{server.url}/base.pt",
            tmp_path / "base.pt",
            progress=False,
            on_progress=lambda name, done, total: seen.append((name, done, total)),
        )
    assert seen[-1] == ("base.pt", len(data), len(data))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("downloading base.pt")]
    assert lines[-1].endswith("(100%)") and len(lines) <= 11


def test_a_sources_on_progress_hears_its_fetches(tmp_path: Path) -> None:
    seen: list[tuple[str, int, int | None]] = []
    with FileServer({"base.pt": MIB}) as server:
        source = WeightsSource(
            cache=tmp_path, base_url=server.url, progress=False, on_progress=lambda *a: seen.append(a)
        )
        fetch_file("base", source=source)
    assert seen and seen[-1] == ("base.pt", len(MIB), len(MIB))
    assert all(name == "base.pt" for name, _, _ in seen)


def test_two_sources_at_once_each_hear_only_their_own_downloads(tmp_path: Path) -> None:
    heard: dict[str, list[str]] = {"a": [], "b": []}
    with FileServer({"base.pt": MIB, "upsample.pt": MIB[::-1]}) as server:
        server.chunk_delay = 0.01  # ~0.16 s each: the two transfers overlap
        sources = {
            key: WeightsSource(
                cache=tmp_path,
                base_url=server.url,
                progress=False,
                on_progress=lambda name, done, total, key=key: heard[key].append(name),
            )
            for key in heard
        }
        threads = [
            threading.Thread(target=fetch_file, args=(name,), kwargs={"source": sources[key]})
            for key, name in (("a", "base"), ("b", "upsample"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        # A download given no callback reports to no one.
        download(f"{server.url}/base.pt", tmp_path / "third.pt", progress=False)
    assert heard["a"] and set(heard["a"]) == {"base.pt"}
    assert heard["b"] and set(heard["b"]) == {"upsample.pt"}
    assert (tmp_path / "base.pt").read_bytes() == MIB and (tmp_path / "upsample.pt").read_bytes() == MIB[::-1]
