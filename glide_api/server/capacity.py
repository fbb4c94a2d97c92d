"""Caps on the requests that hold a thread for long: event streams and synchronous waits.

Each kind has its own number of threads (see `production.py`), so the short requests (health,
status, submissions) always find one free. A request beyond its kind's cap is refused at once
with 503 and `Retry-After`, before anything is started for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..errors import ServerBusy

RETRY_AFTER_SECONDS = 5


class Capacity:
    """A counter of held places, at most `limit`; `setting` names the limit in errors."""

    def __init__(self, setting: str, limit: int, *, what: str) -> None:
        self.setting = setting
        self.limit = limit
        self.what = what
        self._held = 0
        self._cond = threading.Condition()

    def acquire(self) -> Callable[[], None]:
        """Take a place (`ServerBusy` when none is free); returns its release, safe to call twice."""
        with self._cond:
            if self._held >= self.limit:
                raise ServerBusy(
                    f"{self.setting}: this server keeps at most {self.limit} {self.what} open at once; "
                    f"retry in {RETRY_AFTER_SECONDS} s",
                    retry_after=RETRY_AFTER_SECONDS,
                )
            self._held += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._cond:
                if not released:
                    released = True
                    self._held -= 1
                    self._cond.notify_all()

        return release

    def __len__(self) -> int:
        """How many places are held now."""
        return self._held

    def wait_empty(self, timeout: float) -> bool:
        """Block until no place is held, up to `timeout` seconds; True if none is."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._held:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True
