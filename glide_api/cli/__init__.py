"""The ``glide-api`` command line. It parses, calls the library, and reports; no logic of its own.

Each subcommand is one ``add_<name>(subparsers)`` function, in the module of its family
(`weights`: download, models; `generate`: generate, inpaint, img2img; `serve`; `training`: synthetic,
train, evaluate), that builds its parser and sets ``handler`` to a function ``(args) -> exit
status``; `SUBCOMMANDS` lists them. To add one, write such a function and append it there.

Errors the user can act on (`GlideError`, `ValueError`, `OSError`) print one line to stderr and
exit 1, without a traceback (``-v`` shows the library's log lines); handlers raise them rather
than print them, so this module is the one place that reports.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
from collections.abc import Callable, Sequence

from glide_api.cli.generate import add_generate, add_img2img, add_inpaint
from glide_api.cli.serve import add_serve, add_worker, run_serve
from glide_api.cli.training import add_evaluate, add_synthetic, add_train
from glide_api.cli.weights import add_download, add_models
from glide_api.errors import GlideError

__all__ = ["SUBCOMMANDS", "build_parser", "main", "run_serve"]

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
        print("glide-api: interrupted (an unfinished download resumes when run again)", file=sys.stderr)
        return 130
    except (GlideError, ValueError, OSError) as e:
        return _error(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


def _error(message: str) -> int:
    """Report a failure the user can act on as one line on stderr; the exit status is 1."""
    print(f"glide-api: error: {message}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    """The full parser: global options plus every subcommand in `SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(prog="glide-api", description="Self-hosted GLIDE text-to-image service.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v: info, -vv: debug)")
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
    logging.basicConfig(level=level, format="%(asctime)s glide-api %(levelname)s %(name)s: %(message)s")


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_download,
    add_models,
    add_generate,
    add_inpaint,
    add_img2img,
    add_serve,
    add_worker,
    add_synthetic,
    add_train,
    add_evaluate,
)
