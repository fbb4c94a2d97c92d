"""The client's local files: upload inputs read from a path, bytes or a file object, and downloaded
images written under safe names, atomically, never through a link."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from ..errors import InvalidType

FileInput = str | os.PathLike[str] | bytes | BinaryIO

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_field(source: FileInput, default_name: str) -> tuple[str, bytes]:
    """(file name, bytes) for a multipart field, from a path, bytes or a binary file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return default_name, bytes(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path.name, path.read_bytes()
    data = source.read()
    if not isinstance(data, bytes):
        raise InvalidType(f"{default_name.split('.')[0]}: open the file in binary mode ('rb')")
    return Path(str(getattr(source, "name", default_name))).name, data


def safe_name(name: str | None, fallback: str) -> str:
    """A plain file name: only [A-Za-z0-9._-] (path separators too become "_"), not starting with
    "." or "-", at most 120 characters, ending ".png"; `fallback` when nothing is left."""
    base = _UNSAFE.sub("_", name or "").lstrip(".-")[:120]
    if not base.strip("._-"):
        base = _UNSAFE.sub("_", fallback).lstrip(".-")
    return base if base.lower().endswith(".png") else base + ".png"


def disposition_name(header: str | None) -> str | None:
    """The file name of a Content-Disposition header, without any directory part."""
    match = re.search(r'filename="([^"]*)"|filename=([^;\s]+)', header or "")
    name = (match.group(1) or match.group(2)) if match else None
    return re.split(r"[/\\]", name)[-1] if name else None


def replace_file(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file next to `path`, then rename it over `path` (atomic; an
    existing link at `path` is replaced, not followed)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".glide-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
