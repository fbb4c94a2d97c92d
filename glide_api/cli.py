"""The ``glide-api`` command line. It parses, calls the library, and reports; no logic of its own.

Each subcommand is one ``add_<name>(subparsers)`` function that builds its parser and sets
``handler`` to a function ``(args) -> exit status``; `SUBCOMMANDS` lists them. To add one (serve,
generate, inpaint, train), write such a function and append it there.

Errors the user can act on (`GlideError`, `ValueError`, `OSError`) print one line to stderr and
exit 1, without a traceback (``-v`` shows the library's log lines).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from glide_api.errors import GlideError
from glide_api.models import hub
from glide_api.models.download import human_size

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors: argparse has printed already
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    _configure_logging(args.verbose)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("glide-api: interrupted (an unfinished download resumes when run again)",
              file=sys.stderr)
        return 130
    except (GlideError, ValueError, OSError) as e:
        return _error(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


def _error(message: str) -> int:
    """Report a failure the user can act on as one line on stderr; the exit status is 1."""
    print(f"glide-api: error: {message}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    """The full parser: global options plus every subcommand in `SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="glide-api", description="Self-hosted GLIDE text-to-image service.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: info, -vv: debug)")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("glide-api")
    except importlib.metadata.PackageNotFoundError:  # run from a source checkout
        import glide_api

        return getattr(glide_api, "__version__", "(version unknown)")


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="glide-api: %(levelname)s: %(message)s")


def _cache_options() -> argparse.ArgumentParser:
    """Options shared by the commands that use the weights cache."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="the weights cache (default: $GLIDE_API_CACHE, else the user cache "
                             f"folder, here {str(hub.cache_dir()).replace('%', '%%')})")
    return parent


# ---- download ----------------------------------------------------------------------------------

_GROUPS = {"all": hub.CHECKPOINTS, "tokenizer": hub.TOKENIZER_FILES}
_DEFAULT_DOWNLOADS = ("base", "upsample")


def add_download(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "download", parents=[_cache_options()],
        help="fetch official checkpoints and the tokenizer into the cache",
        description="Download official files into the cache (resuming unfinished downloads) and "
                    "convert checkpoints to safetensors. The GPT-2 tokenizer files always come "
                    "too. Names: " + ", ".join(hub.REGISTRY) + "; 'all' for the four diffusion "
                    "checkpoints; 'tokenizer' for only the tokenizer.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"what to fetch (default: {' '.join(_DEFAULT_DOWNLOADS)})")
    p.add_argument("--base-url", metavar="URL",
                   help="a mirror holding the files under their plain names "
                        "(default: $GLIDE_API_BASE_URL, else OpenAI's servers)")
    p.add_argument("--no-convert", action="store_true",
                   help="keep only the .pt files (they are converted on first use instead)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(handler=run_download)


def run_download(args: argparse.Namespace) -> int:
    names = _expand_names(args.names or _DEFAULT_DOWNLOADS)
    if hub.offline_env() and any(not _is_cached(n, args.cache_dir) for n in names):
        return _error("downloads are off because GLIDE_API_OFFLINE is set; unset it to download")
    options = {"cache": args.cache_dir, "base_url": args.base_url,
               "progress": not args.no_progress}
    # Running commentary only for a person at a terminal; scripts get the summary on stdout.
    chatty = not args.no_progress and sys.stderr.isatty()
    for name in names:
        entry = hub.REGISTRY[name]
        convert = entry.preset is not None and not args.no_convert
        if chatty and not _is_cached(name, args.cache_dir):
            then = ", then converting it to safetensors" if convert else ""
            print(f"{name}: downloading {entry.filename}{then}", file=sys.stderr)
        if convert:
            hub.fetch_checkpoint(name, **options)
        else:
            hub.fetch_file(name, **options)
    cached = {c.name: c for c in hub.cached_models(cache=args.cache_dir)}
    for name in names:
        _print_cached(cached[name])
    print(f"cache: {args.cache_dir or hub.cache_dir()}")
    return 0


def _is_cached(name: str, cache: Path | None) -> bool:
    return (Path(cache or hub.cache_dir()) / hub.REGISTRY[name].filename).is_file()


def _expand_names(requested: Iterable[str]) -> list[str]:
    """Registry names in download order: tokenizer first (small), then as requested, no repeats."""
    names = list(hub.TOKENIZER_FILES)
    for name in requested:
        expanded = _GROUPS.get(name, (name,))
        for n in expanded:
            if n not in hub.REGISTRY:
                raise ValueError(f"unknown name {name!r}; expected one of "
                                 f"{', '.join([*hub.REGISTRY, *_GROUPS])}")
            if n not in names:
                names.append(n)
    return names


def _print_cached(c: hub.CachedFile) -> None:
    where = c.path or c.converted
    line = f"{c.name:<18} {human_size(c.size):>9}  {where}"
    if c.path is not None and c.converted is not None:
        line += f"\n{'':<18} {'':>9}  {c.converted} (converted)"
    print(line)


# ---- models ------------------------------------------------------------------------------------


def add_models(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models", parents=[_cache_options()], help="list what is in the weights cache",
        description="List the official files in the cache: size, whether converted to "
                    "safetensors, and the start of the recorded sha256.")
    p.set_defaults(handler=run_models)


def run_models(args: argparse.Namespace) -> int:
    folder = args.cache_dir or hub.cache_dir()
    cached = hub.cached_models(cache=folder)
    print(f"cache: {folder}")
    if not cached:
        print("Nothing is cached yet. Fetch the models with: glide-api download")
        return 0
    print(f"{'NAME':<18} {'SIZE':>9}  {'CONVERTED':<9}  SHA256")
    for c in cached:
        if c.partial:
            converted, digest = "-", "(partial download: run glide-api download to resume)"
        else:
            is_checkpoint = hub.REGISTRY[c.name].converted_name is not None
            converted = ("yes" if c.converted else "no") if is_checkpoint else "-"
            digest = c.sha256[:16] if c.sha256 else "(not recorded yet)"
        print(f"{c.name:<18} {human_size(c.size):>9}  {converted:<9}  {digest}")
    missing = [n for n in hub.CHECKPOINTS if n not in {c.name for c in cached}]
    if missing:
        print(f"not cached: {', '.join(missing)} (glide-api download NAME)")
    return 0


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (add_download, add_models)

if __name__ == "__main__":
    sys.exit(main())
