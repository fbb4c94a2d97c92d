"""``glide-api download`` and ``glide-api models``: fill and list the weights cache; `cache_options`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from glide_api.cli.flags import selection_help
from glide_api.download import human_size
from glide_api.errors import WeightsNotFound
from glide_api.model_selection import demo_advice
from glide_api.models import official_files, registry
from glide_api.models.weights_source import WeightsSource, default_cache_dir


def cache_options() -> argparse.ArgumentParser:
    """``--cache-dir``, as a parent parser for every command that uses the weights cache."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help=f"{selection_help('cache_dir').removesuffix(')')}, here {default_cache_dir()})".replace(
            "%", "%%"
        ),
    )
    return parent


# ---- download ----------------------------------------------------------------------------------

DEMO = demo_advice("text2im")


def add_download(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "download",
        parents=[cache_options()],
        help="fetch official checkpoints and the tokenizer into the cache",
        description="Download official files into the cache (resuming unfinished downloads) and "
        "convert checkpoints to safetensors. The GPT-2 tokenizer files always come "
        "too. Names: " + ", ".join(registry.REGISTRY) + "; 'all' for the four diffusion "
        "checkpoints; 'tokenizer' for only the tokenizer.",
    )
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"what to fetch (default: {' '.join(registry.DEFAULT_DOWNLOADS)})",
    )
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="a mirror holding the files under their plain names "
        "(default: $GLIDE_API_BASE_URL, else OpenAI's servers)",
    )
    p.add_argument(
        "--no-convert",
        action="store_true",
        help="keep only the .pt files (they are converted on first use instead)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(handler=run_download)


def run_download(args: argparse.Namespace) -> int:
    names = registry.download_names(args.names or registry.DEFAULT_DOWNLOADS)
    source = WeightsSource.from_env(
        cache=args.cache_dir, base_url=args.base_url, progress=not args.no_progress
    )
    # This command has no --offline: only GLIDE_API_OFFLINE can make the source offline.
    if source.offline and any(not official_files.is_cached(n, source=source) for n in names):
        raise WeightsNotFound(
            f"downloads are off because GLIDE_API_OFFLINE is set; unset it to download; meanwhile {DEMO}"
        )
    # Running commentary only for a person at a terminal; scripts get the summary on stdout.
    chatty = not args.no_progress and sys.stderr.isatty()
    for name in names:
        entry = registry.REGISTRY[name]
        convert = entry.preset is not None and not args.no_convert
        if chatty and not official_files.is_cached(name, source=source):
            then = ", then converting it to safetensors" if convert else ""
            print(f"{name}: downloading {entry.filename}{then}", file=sys.stderr)
        try:
            if convert:
                official_files.fetch_checkpoint(name, source=source)
            else:
                official_files.fetch_file(name, source=source)
        except WeightsNotFound as e:  # the server could not be reached: this very command is the fix
            raise WeightsNotFound(
                f"downloading {entry.filename} failed: {e.__cause__ or e}; check the network (or name "
                f"a mirror with --base-url) and run this command again, it resumes; meanwhile {DEMO}"
            ) from e
    cached = {c.name: c for c in official_files.cached_models(source=source)}
    for name in names:
        _print_cached(cached[name])
    print(f"cache: {source.cache}")
    return 0


def _print_cached(c: official_files.CachedFile) -> None:
    where = c.path or c.converted
    line = f"{c.name:<18} {human_size(c.size):>9}  {where}"
    if c.path is not None and c.converted is not None:
        line += f"\n{'':<18} {'':>9}  {c.converted} (converted)"
    print(line)


# ---- models ------------------------------------------------------------------------------------


def add_models(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        parents=[cache_options()],
        help="list what is in the weights cache",
        description="List the official files in the cache: size, whether converted to "
        "safetensors, and the start of the recorded sha256.",
    )
    p.set_defaults(handler=run_models)


def run_models(args: argparse.Namespace) -> int:
    source = WeightsSource.from_env(cache=args.cache_dir)
    cached = official_files.cached_models(source=source)
    print(f"cache: {source.cache}")
    if not cached:
        print("Nothing is cached yet. Fetch the models with: glide-api download")
        return 0
    print(f"{'NAME':<18} {'SIZE':>9}  {'CONVERTED':<9}  SHA256")
    for c in cached:
        if c.partial:
            converted, digest = "-", "(partial download: run glide-api download to resume)"
        else:
            is_checkpoint = registry.REGISTRY[c.name].converted_name is not None
            converted = ("yes" if c.converted else "no") if is_checkpoint else "-"
            digest = c.sha256[:16] if c.sha256 else "(not recorded yet)"
        print(f"{c.name:<18} {human_size(c.size):>9}  {converted:<9}  {digest}")
    missing = [n for n in registry.CHECKPOINTS if n not in {c.name for c in cached}]
    if missing:
        print(f"not cached: {', '.join(missing)} (glide-api download NAME)")
    return 0
