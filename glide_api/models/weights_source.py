"""Where official weights come from: `WeightsSource`, and the environment variables behind it.

Environment variables (read by `WeightsSource.from_env` when a source is built, never on import):

- ``GLIDE_API_CACHE``: the cache folder (default: ``platformdirs.user_cache_dir("glide-api")``).
- ``GLIDE_API_OFFLINE``: ``1``/``true``/``yes``/``on`` forbids network access; a file missing from
  the cache then raises `WeightsNotFound` instead of being downloaded.
- ``GLIDE_API_BASE_URL``: a mirror to download from instead of OpenAI's servers, holding the files
  under their plain names (``<mirror>/base.pt``, ``<mirror>/encoder.json``, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from glide_api.download import DEFAULT_TIMEOUT, ProgressCallback

__all__ = ["WeightsSource", "default_cache_dir"]

_TRUE = {"1", "true", "yes", "on"}


def default_cache_dir() -> Path:
    """The cache folder: ``$GLIDE_API_CACHE`` if set, else the user cache. Never created here."""
    env = os.environ.get("GLIDE_API_CACHE")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("glide-api"))


@dataclass(frozen=True)
class WeightsSource:
    """Where official files are cached and fetched from, and how a fetch behaves.

    Build one with `from_env` (the environment fills what is not given) or directly (nothing is
    read from the environment). Every function that may fetch official files takes one; it holds
    no state, so sources with different settings or callbacks can be used side by side.
    """

    cache: Path  # the cache folder (created on the first download)
    base_url: str | None = None  # a mirror; None: each file's official URL
    offline: bool = False  # never download: a missing file raises WeightsNotFound
    progress: bool = True  # progress bars on a terminal
    timeout: float = DEFAULT_TIMEOUT  # seconds per network wait (connecting, each read)
    on_progress: ProgressCallback | None = None  # told (file name, bytes, total) during downloads

    @classmethod
    def from_env(
        cls,
        *,
        cache: str | os.PathLike[str] | None = None,
        base_url: str | None = None,
        offline: bool = False,
        progress: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        on_progress: ProgressCallback | None = None,
    ) -> WeightsSource:
        """A source from the arguments, the environment filling the rest: `cache` defaults to
        `default_cache_dir()`, `base_url` to ``$GLIDE_API_BASE_URL``, and ``GLIDE_API_OFFLINE``
        makes it offline even when `offline` is false."""
        env_offline = os.environ.get("GLIDE_API_OFFLINE", "").strip().lower() in _TRUE
        return cls(
            cache=Path(cache).expanduser() if cache is not None else default_cache_dir(),
            base_url=base_url or os.environ.get("GLIDE_API_BASE_URL") or None,
            offline=offline or env_offline,
            progress=progress,
            timeout=timeout,
            on_progress=on_progress,
        )
