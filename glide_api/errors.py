"""The package's exceptions: one small tree, so callers can catch by meaning.

Configuration and argument problems are plain `ValueError`s (they name the parameter and the rule);
these classes cover what can go wrong with files on disk and transfers.
"""

from __future__ import annotations


class GlideError(Exception):
    """Base class of every error glide_api raises on purpose (besides ValueError)."""


class WeightsNotFound(GlideError, FileNotFoundError):
    """A model or tokenizer file is not on disk and may not (or could not) be downloaded."""


class DownloadError(GlideError):
    """A transfer failed: HTTP error, connection lost, or a short read. Nothing was kept as complete."""


class HostUnreachable(DownloadError):
    """No connection could be made (no network, DNS failure, refused): nothing was transferred."""


class ChecksumMismatch(GlideError):
    """A file's sha256 differs from the pinned or recorded value."""


class StateDictMismatch(GlideError, ValueError):
    """A state_dict's keys or shapes do not match the model's (missing, unexpected, mis-shaped)."""
