"""usage/generate.py run as a user runs it (a subprocess) against a live server with the small models."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from glide_api.pipeline.images import read_png_metadata

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "usage" / "generate.py"
PROMPT = 'a corgi <script>alert("hi")</script> & friends'
FAST = ["--base-steps", "3", "--upsample-steps", "2"]  # set the server's defaults first, as the original did


def generate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--url", url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def linked_images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def test_v1_run_writes_the_images_and_an_escaped_gallery_linking_them(server_url, tmp_path) -> None:
    out = tmp_path / "out"
    run = generate(server_url, PROMPT, "--size", "64", "--n", "2", "--seed", "7", "--out", str(out), *FAST)
    assert run.returncode == 0, run.stderr
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2
    assert [Image.open(p).size for p in pngs] == [(64, 64), (64, 64)]
    assert sorted(read_png_metadata(p.read_bytes())["seed"] for p in pngs) == [7, 8]
    page = (out / "index.html").read_text(encoding="utf-8")
    assert sorted(linked_images(page)) == [p.name for p in pngs]  # relative links to the files written
    assert "<script" not in page and html.escape(PROMPT) in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing loaded from elsewhere
    assert "<dd>7</dd>" in page and "<dd>8</dd>" in page
    assert "upsample 64: step 2/2" in run.stderr  # plain progress lines when stderr is not a terminal
    assert run.stdout.splitlines()[-1] == str(out / "index.html")


def test_legacy_run_uses_the_original_route_and_writes_each_image(server_url, tmp_path) -> None:
    out = tmp_path / "legacy"
    run = generate(
        server_url,
        "--legacy",
        "mountains in the night",
        "--size",
        "64",
        "--batch-size",
        "2",
        "--guidance-scale",
        "2.5",
        "--out",
        str(out),
        *FAST,
    )
    assert run.returncode == 0, run.stderr
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and all(Image.open(p).size == (64, 64) for p in pngs)
    assert read_png_metadata(pngs[0].read_bytes())["guidance_scale"] == 2.5
    page = (out / "index.html").read_text(encoding="utf-8")
    assert sorted(linked_images(page)) == [p.name for p in pngs] and "mountains in the night" in page
    assert "parameters" in run.stdout  # the step POSTs answered with the parameter counts


def test_a_refused_request_exits_1_with_the_server_message(server_url, tmp_path) -> None:
    run = generate(server_url, "x", "--size", "100", "--out", str(tmp_path))
    assert run.returncode == 1
    assert any(line.startswith("error: HTTP 400: size:") for line in run.stderr.splitlines())
    assert not (tmp_path / "index.html").exists()
