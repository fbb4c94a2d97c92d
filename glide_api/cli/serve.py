"""``glide-api serve``: the web service, its settings from defaults, file, environment and flags."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from glide_api.cli.generate import model_options

if TYPE_CHECKING:
    from glide_api.config import ServiceConfig

logger = logging.getLogger(__name__)


def _settings_parser(
    subparsers: argparse._SubParsersAction, name: str, *, help: str, description: str
) -> argparse.ArgumentParser:
    """A subcommand taking the model options and a flag for every other service setting."""
    from glide_api.config import ServiceConfig

    models = model_options(from_config=True)
    # The settings the model options already set get no second flag here.
    model_settings = set(vars(models.parse_args([])))
    p = subparsers.add_parser(name, parents=[models], help=help, description=description)
    p.add_argument("--config", type=Path, metavar="FILE", help="a TOML or JSON file of settings")
    group = p.add_argument_group("service settings")
    for f in dataclasses.fields(ServiceConfig):
        if f.name in model_settings:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            group.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f.metadata["help"],
            )
        else:
            group.add_argument(
                flag,
                dest=f.name,
                default=None,
                metavar=f.metadata.get("metavar", "VALUE"),
                help=f"{f.metadata['help']} (default: {f.default or '—'})",
            )
    return p


SETTINGS_SOURCES = (
    "Settings come from defaults, then the config file (--config or GLIDE_API_CONFIG), then "
    "GLIDE_API_* environment variables, then these flags; docs/configuration.md lists them all."
)


def add_serve(subparsers: argparse._SubParsersAction) -> None:
    p = _settings_parser(
        subparsers,
        "serve",
        help="run the web service (UI and APIs)",
        description="Serve the web UI and the APIs. With --queue, an API replica of a fleet that "
        f"loads no models (docs/scaling.md). {SETTINGS_SOURCES}",
    )
    p.add_argument(
        "--dev", action="store_true", help="Flask's development server instead of waitress (auto-reload off)"
    )
    p.set_defaults(handler=run_serve)


def add_worker(subparsers: argparse._SubParsersAction) -> None:
    p = _settings_parser(
        subparsers,
        "worker",
        help="run a fleet's jobs: load the models and take jobs from --queue",
        description="Load the models and run the jobs API replicas (glide-api serve --queue) admit, "
        f"one worker per GPU, on any number of hosts (docs/scaling.md). {SETTINGS_SOURCES}",
    )
    p.set_defaults(handler=run_worker)


def serve_config(args: argparse.Namespace) -> ServiceConfig:
    """The settings `serve` runs with: the parsed flags over the file, the environment, the defaults."""
    from glide_api.config import ServiceConfig

    names = {f.name for f in dataclasses.fields(ServiceConfig)}
    overrides = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if args.cache_dir is not None:
        overrides["cache_dir"] = str(args.cache_dir)
    for name in ("api_keys", "admin_keys"):
        if name in overrides:
            flag = name.replace("_", "-")
            logger.warning(
                "--%s: keys on the command line are visible to every user of this machine (ps); "
                "use --%s-file FILE or GLIDE_API_%s instead",
                flag,
                flag,
                name.upper(),
            )
    return ServiceConfig.load(file=args.config, overrides=overrides)


def _log_level(config: ServiceConfig) -> None:
    logging.getLogger().setLevel(config.log_level.upper())
    logging.getLogger("glide_api").setLevel(config.log_level.upper())


def run_serve(args: argparse.Namespace) -> int:
    config = serve_config(args)
    _log_level(config)
    if args.dev:
        from glide_api.server import create_app

        create_app(config).run(host=config.host, port=config.port, threaded=True, use_reloader=False)
        return 0
    from glide_api.server.production import serve

    serve(config)
    return 0


def run_worker(args: argparse.Namespace) -> int:
    from glide_api.errors import InvalidParameter
    from glide_api.server.fleet_worker import run

    config = serve_config(args)
    if config.queue is None:
        raise InvalidParameter("queue: a worker needs the fleet's Redis: --queue redis://HOST:PORT/DB")
    _log_level(config)
    run(config)
    return 0
