"""A server-sent-events parser: bytes as they arrive in, events out; no HTTP, no JSON.

It follows the WHATWG event-stream rules the client relies on: lines end in LF, CRLF or CR (also when
a chunk ends between CR and LF); `event`, `data` and `id` fields; a line starting with ":" is a
comment (the server's keep-alive); a field without ":" has the empty value; one space after ":" is
dropped; data lines join with "\n"; a blank line dispatches the event, unless it had no data; the
last `id` stays in force for later events. Other fields (`retry`) are ignored, and an event the
stream ends before dispatching is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: `event` its type ("message" when not named), `data` its data lines
    joined, `id` the last event id the stream set ("" when none yet)."""

    event: str
    data: str
    id: str


def parse_event_stream(chunks: Iterable[bytes]) -> Iterator[ServerSentEvent]:
    """The events of a stream given as byte chunks split anywhere (inside a line or a UTF-8
    character too); each is yielded as soon as its blank line arrives. Bad UTF-8 is replaced."""
    pending, after_cr, first_line = b"", False, True
    event, data, last_id = "", [], ""
    for chunk in chunks:
        if not chunk:
            continue
        if after_cr and chunk.startswith(b"\n"):  # the LF of a CRLF split across chunks
            chunk = chunk[1:]
        pending += chunk
        after_cr = pending.endswith(b"\r")
        *lines, pending = _LINE_END.split(pending)
        for raw_line in lines:
            line = raw_line.decode("utf-8", errors="replace")
            if first_line:
                line, first_line = line.removeprefix("\ufeff"), False  # a byte order mark is not data
            if not line:
                if data:
                    yield ServerSentEvent(event=event or "message", data="\n".join(data), id=last_id)
                event, data = "", []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id" and "\0" not in value:
                last_id = value
