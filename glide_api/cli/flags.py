"""Flags made from the declarations that own them: a settings dataclass's fields (help, choices and
metavar in each field's metadata) and the generation options (`glide_api.options`)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from glide_api.model_selection import ModelSelection
from glide_api.options import Option


def field_flag(group: Any, f: dataclasses.Field, *, use_default: bool) -> None:
    """`--name` for one dataclass field. Without `use_default` the flag defaults to None, so a
    setting left unset leaves the environment and the config file in charge."""
    meta = f.metadata
    default = f.default if use_default else None
    if f.type in ("bool", bool):
        group.add_argument(
            _flag(f.name),
            dest=f.name,
            action=argparse.BooleanOptionalAction,
            default=default,
            help=meta["help"],
        )
        return
    shown = f.default if f.default not in ((), None, "") else "—"
    group.add_argument(
        _flag(f.name),
        dest=f.name,
        default=default,
        choices=meta.get("choices"),
        metavar=meta.get("metavar", None if meta.get("choices") else "VALUE"),
        help=f"{meta['help']} (default: {shown})",
    )


def option_flag(group: Any, option: Option) -> None:
    """`--name` for one generation option; unset, it is None and the library's default applies."""
    shown = "" if option.default is None else f" (default: {option.default})"
    group.add_argument(
        option.flag,
        dest=option.name,
        type=option.kind,
        default=None,
        choices=option.choices,
        metavar=option.metavar,
        help=(option.help + shown).replace("%", "%%"),
    )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def selection_help(name: str) -> str:
    """The help text of one `ModelSelection` setting, for commands that take it on its own."""
    return ModelSelection.__dataclass_fields__[name].metadata["help"]
