"""A small reader of server-sent events for tests (independent of the server's own writer)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import requests


def read_events(response: requests.Response) -> Iterator[tuple[str, dict]]:
    """(event name, parsed data) for each event of a streaming response; comments are skipped."""
    name, data = None, []
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if data:
                yield name or "message", json.loads("\n".join(data))
            name, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
