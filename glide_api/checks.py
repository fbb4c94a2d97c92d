"""Argument checks shared by every layer: each raises `InvalidParameter` naming the parameter and the rule.

`bool` is a subclass of `int` in Python, so `True` would pass a bare `isinstance(value, int)`; these
checks refuse it wherever a number is meant.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .errors import InvalidParameter


def is_integer(value: object) -> bool:
    """An int, and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int or a float, and not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` if it is an int (not a bool) within [minimum, maximum]; else `InvalidParameter`."""
    if is_integer(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return value
    raise InvalidParameter(f"{name}: must be {_integer_rule(minimum, maximum)} (got {value!r})")


def number(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """`value` if it is a finite int or float (not a bool) within [minimum, maximum]."""
    ok = is_number(value) and math.isfinite(value)
    if ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return value
    if minimum is not None and maximum is not None:
        rule = f"a number in [{minimum:g}, {maximum:g}]"
    elif minimum is not None:
        rule = f"a number of at least {minimum:g}"
    elif maximum is not None:
        rule = f"a number of at most {maximum:g}"
    else:
        rule = "a finite number"
    raise InvalidParameter(f"{name}: must be {rule} (got {value!r})")


def one_of(name: str, value: Any, choices: Iterable[str]) -> str:
    """`value` if it is one of `choices`."""
    allowed = tuple(choices)
    if value in allowed:
        return value
    raise InvalidParameter(f"{name}: must be one of {', '.join(allowed)} (got {value!r})")


def _integer_rule(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer in [{minimum}, {maximum}]"
    if minimum == 1:
        return "a positive integer"
    if minimum == 0:
        return "a non-negative integer"
    if minimum is not None:
        return f"an integer of at least {minimum}"
    if maximum is not None:
        return f"an integer of at most {maximum}"
    return "an integer"


REDIS_SCHEMES = ("redis", "rediss", "unix")


def redis_url(name: str, value: object) -> str:
    """`value` if it is a Redis URL (redis://, rediss:// or unix://), else `InvalidParameter`."""
    from urllib.parse import urlsplit

    if not isinstance(value, str) or urlsplit(value).scheme not in REDIS_SCHEMES:
        raise InvalidParameter(
            f"{name}: must be a Redis URL, redis://HOST:PORT/DB (or rediss://, unix://) (got {value!r})"
        )
    return value


def without_password(url: str) -> str:
    """A URL as logs and messages may show it: scheme, host, port and path."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.hostname is None:  # unix:///path/to/socket
        return f"{parts.scheme}://{parts.path}"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
