"""Download progress reaches the log (servers have no terminal) and a progress hook (the UI)."""

from __future__ import annotations

import logging

from http_fixture import FileServer

from glide_api.models.download import download, progress_hook


def test_progress_is_logged_every_tenth_and_reported_to_the_hook(tmp_path, caplog) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    seen: list[tuple[str, int, int | None]] = []
    with (
        FileServer({"base.pt": data}) as server,
        caplog.at_level(logging.INFO),
        progress_hook(lambda name, done, total: seen.append((name, done, total))),
    ):
        download(f"{server.url}/base.pt", tmp_path / "base.pt", progress=False)
    assert seen[-1] == ("base.pt", len(data), len(data))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("downloading base.pt")]
    assert lines[-1].endswith("(100%)") and len(lines) <= 11


def test_no_hook_outside_the_block(tmp_path) -> None:
    seen = []
    with progress_hook(lambda *a: seen.append(a)):
        pass
    with FileServer({"f": b"x" * 1000}) as server:
        download(f"{server.url}/f", tmp_path / "f", progress=False)
    assert seen == []
