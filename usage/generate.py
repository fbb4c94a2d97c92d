#!/usr/bin/env python3
"""Generate images on a glide-api server and write them, with an HTML gallery page, into a folder.

    python usage/generate.py "a corgi in a field" --size 64 --n 2 --out out/
    python usage/generate.py --legacy "mountains in the night" --size 64 --batch-size 2
    python usage/generate.py --base-steps 50 --upsample-steps 27 "a red cube"

By default it uses the v1 jobs API and shows live progress (server-sent events; a bar per sampling
stage with tqdm when installed and on a terminal, plain lines otherwise). `--legacy` calls the original
`GET /image` route instead. `--base-steps` / `--upsample-steps` first change the server's default
steps, as the original `POST /basemodel` and `POST /upmodel` did (for every later job, server-wide).

Writes the PNGs (each carries its generation parameters in a text chunk) and `index.html`, a
self-contained page (no scripts, no external assets) that shows each image with its prompt, seed,
size and settings. Exit status: 0 done, 1 the server refused or the job failed, 2 bad arguments,
130 interrupted (a v1 job is cancelled on the server).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

from glide_api.client import GlideAPIError, GlideClient, Job

DEFAULT_TIMEOUT = 960.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METADATA_KEY = b"glide-api"  # the PNG tEXt keyword the server stores the parameters under
HIDDEN = {"prompt", "seed", "size"}  # shown on their own lines, not among the settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("prompt", help="what to draw")
    parser.add_argument(
        "--url",
        default=os.environ.get("GLIDE_API_URL", "http://127.0.0.1:5000"),
        help="the server (default: $GLIDE_API_URL or http://127.0.0.1:5000)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("GLIDE_API_KEY"),
        help="API key, if the server wants one (default: $GLIDE_API_KEY)",
    )
    parser.add_argument("--size", type=int, help="image size in pixels (default: the server's)")
    parser.add_argument("--n", "--batch-size", dest="n", type=int, default=1, help="number of images")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance (server default 3.0)")
    parser.add_argument("--upsample-temp", type=float, help="upsampler noise scale (server default 0.997)")
    parser.add_argument("--seed", type=int, help="seed of the first image (image i uses seed+i)")
    parser.add_argument(
        "--base-steps",
        type=int,
        metavar="N",
        help="first set the server's base model steps (POST /basemodel)",
    )
    parser.add_argument(
        "--upsample-steps",
        type=int,
        metavar="N",
        help="first set the server's upsampler steps (POST /upmodel)",
    )
    parser.add_argument("--legacy", action="store_true", help="use the original GET /image route")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the images (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n: must be at least 1")
    return args


# ---- progress ------------------------------------------------------------------------------------


class StageProgress:
    """A progress bar per sampling stage ("base 64", "upsample 256"): tqdm when it is installed and
    stderr is a terminal, else a plain line on stderr at every tenth of a stage (readable in logs)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.stage: str | None = None
        self.bar: Any = None
        self.shown = -1
        self.tqdm: Any = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            self.tqdm = tqdm

    def update(self, stage: str, step: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage, self.shown = stage, -1
            if self.tqdm is not None:
                self.bar = self.tqdm(total=total, desc=stage, unit="step", leave=True)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
        elif step == total or step * 10 // total > self.shown:
            self.shown = step * 10 // total
            print(f"  {stage}: step {step}/{total}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---- the two APIs --------------------------------------------------------------------------------


def run_v1(client: GlideClient, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Queue a job, follow its events, save its images; one record per image for the gallery."""
    job = client.generate(
        args.prompt,
        size=args.size,
        n=args.n,
        seed=args.seed,
        guidance_scale=args.guidance_scale,
        upsample_temp=args.upsample_temp,
        wait=False,
    )
    progress = StageProgress(enabled=not args.no_progress)
    progress.note(f"job {job.id} queued")
    deadline = time.monotonic() + args.timeout
    try:
        for event in client.events(job.id, timeout=args.timeout):
            if event.type == "queued" and event.position and event.position > 1:
                progress.note(f"waiting: {event.position - 1} job(s) ahead in the queue")
            elif event.type == "progress" and event.progress is not None:
                progress.update(event.progress.stage, event.progress.step, event.progress.total)
    except KeyboardInterrupt:  # Ctrl-C: do not leave the job running on the server
        client.cancel(job.id)
        raise
    finally:
        progress.close()
    job = client.wait(job.id, timeout=max(1.0, deadline - time.monotonic()))  # raises if it failed
    paths = client.save_images(job, args.out)
    return [
        image_record(path.name, job.prompt, image.seed, image.metadata, job=job)
        for path, image in zip(paths, job.images, strict=True)
    ]


def run_legacy(client: GlideClient, args: argparse.Namespace) -> list[dict[str, Any]]:
    """`GET /image`, as the original example did; saves each image of the answer."""
    size = args.size or client.settings()["defaults"]["size"]
    if not args.no_progress:
        print(f"GET /image (size {size}, batch {args.n}): waiting for the images...", file=sys.stderr)
    given = {"guidance_scale": args.guidance_scale, "upsample_temp": args.upsample_temp}
    result = client.legacy_image(
        args.prompt,
        size=size,
        batch_size=args.n,
        seed=args.seed,
        timeout=args.timeout,
        **{k: v for k, v in given.items() if v is not None},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    job_tag = re.sub(r"[^0-9a-f]", "", str(result.get("job_id", "")))[:8] or "legacy"
    records = []
    for index, (png, seed) in enumerate(zip(result["images"], result["seeds"], strict=True)):
        name = f"glide-{job_tag}-{index}.png"
        (args.out / name).write_bytes(png)
        metadata = png_metadata(png) or {"size": size, **given}
        metadata["processing_time"] = result["processing_time"]
        records.append(image_record(name, args.prompt, seed, metadata))
    return records


def image_record(
    name: str, prompt: str, seed: int, metadata: dict[str, Any], *, job: Job | None = None
) -> dict[str, Any]:
    settings = {k: v for k, v in metadata.items() if k not in HIDDEN and v is not None}
    if job is not None:
        settings.update(job_id=job.id, chain=" → ".join(job.chain))
        if job.total_seconds is not None:
            settings["seconds"] = round(job.total_seconds, 2)
    return {"file": name, "prompt": prompt, "seed": seed, "size": metadata.get("size"), "settings": settings}


def png_metadata(png: bytes) -> dict[str, Any]:
    """The generation parameters in a glide-api PNG's tEXt chunk ({} when absent), with no image
    library: walk the chunks (length, type, data, CRC)."""
    if not png.startswith(PNG_SIGNATURE):
        return {}
    offset, prefix = len(PNG_SIGNATURE), METADATA_KEY + b"\0"
    try:
        while offset + 8 <= len(png):
            length, kind = struct.unpack(">I4s", png[offset : offset + 8])
            data = png[offset + 8 : offset + 8 + length]
            if kind == b"tEXt" and data.startswith(prefix):
                return json.loads(data[len(prefix) :].decode("latin-1"))
            if kind == b"zTXt" and data.startswith(prefix):  # + one byte: the compression method
                return json.loads(zlib.decompress(data[len(prefix) + 1 :]).decode("latin-1"))
            if kind == b"IEND":
                break
            offset += 12 + length
    except (ValueError, zlib.error):  # a damaged chunk: show the image without its parameters
        return {}
    return {}


# ---- the gallery ---------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="glide-api usage/generate.py">
<title>{title}</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; background: #fafafa; }}
h1 {{ font-size: 1.4rem; overflow-wrap: anywhere; }}
main {{ display: flex; flex-wrap: wrap; gap: 1.5rem; }}
figure {{ margin: 0; padding: 1rem; background: #fff; border: 1px solid #ddd; border-radius: 8px;
          max-width: 320px; }}
img {{ width: 256px; height: 256px; object-fit: contain; image-rendering: pixelated; background: #eee; }}
figcaption {{ font-size: 13px; overflow-wrap: anywhere; }}
dl {{ display: grid; grid-template-columns: auto 1fr; gap: 0 .75rem; margin: .5rem 0 0; }}
dt {{ color: #666; }} dd {{ margin: 0; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{summary}</p>
<main>
{figures}
</main>
</body>
</html>
"""


def write_gallery(folder: Path, records: list[dict[str, Any]], *, source: str) -> Path:
    """`index.html` in `folder`: every image (relative links) with its prompt, seed, size and
    settings. All text is HTML-escaped; the page loads nothing from elsewhere."""
    e = html.escape
    figures = []
    for r in records:
        href = quote(r["file"])
        rows = [
            ("prompt", r["prompt"]),
            ("seed", r["seed"]),
            ("size", r["size"]),
            *sorted(r["settings"].items()),
        ]
        items = "".join(f"<dt>{e(str(k))}</dt><dd>{e(_text(v))}</dd>" for k, v in rows)
        figures.append(
            f'<figure><a href="{href}"><img src="{href}" alt="{e(r["prompt"])}"></a>\n'
            f'<figcaption><a href="{href}">{e(r["file"])}</a>\n<dl>{items}</dl></figcaption>'
            "</figure>"
        )
    prompts = sorted({r["prompt"] for r in records})
    title = "glide-api: " + (prompts[0] if len(prompts) == 1 else f"{len(prompts)} prompts")
    summary = f"{len(records)} image(s) from {source}, {time.strftime('%Y-%m-%d %H:%M:%S')}"
    page = folder / "index.html"
    page.write_text(
        PAGE.format(title=e(title), summary=e(summary), figures="\n".join(figures)), encoding="utf-8"
    )
    return page


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# ---- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with GlideClient(args.url, api_key=args.api_key) as client:
        try:
            if args.base_steps is not None:
                count = client.set_base_steps(args.base_steps)
                print(f"base model: {args.base_steps} steps from now on ({count:,} parameters)")
            if args.upsample_steps is not None:
                count = client.set_upsample_steps(args.upsample_steps)
                print(f"upsampler: {args.upsample_steps} steps from now on ({count:,} parameters)")
            records = run_legacy(client, args) if args.legacy else run_v1(client, args)
        except GlideAPIError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    page = write_gallery(args.out, records, source=args.url + (" (GET /image)" if args.legacy else ""))
    for record in records:
        print(args.out / record["file"])
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
