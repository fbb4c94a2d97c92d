"""Safe file transfer: resumable HTTP downloads, sha256 records, locks and atomic writes.

Knows nothing of GLIDE; `glide_api.models.official_files` decides what to fetch and where it goes.

A downloaded file gets a record beside it, ``<file>.sha256.json`` = ``{"sha256", "size",
"mtime_ns"}``. `verify_file` trusts the recorded hash while the file's size and mtime are those
recorded (the test make and rsync use) and re-hashes only a file that changed: hashing 1.5 GB on
every model load would cost seconds for no gain, while a changed file is still caught.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import filelock
import requests
from tqdm.auto import tqdm

from glide_api.errors import ChecksumMismatch, DownloadError, HostUnreachable

__all__ = [
    "DEFAULT_TIMEOUT",
    "HostUnreachable",
    "ProgressCallback",
    "download",
    "human_size",
    "sha256_file",
    "verify_file",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0  # seconds per network wait (connecting, each read), not for a whole file
_CHUNK = 1 << 18  # bytes per read; a broken read loses at most this much

# Told (file name, bytes so far, total bytes or None) about once a second while a file downloads.
ProgressCallback = Callable[[str, int, int | None], None]


# ---- files on disk -----------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes (read in chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def temp_path(path: Path) -> Path:
    """A sibling name for writing `path` before an atomic rename, unique per process and thread."""
    return path.with_name(f"{path.name}.tmp{os.getpid()}-{threading.get_ident()}")


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path`: readers see the old file or the whole new one, never a part."""
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold ``<path>.lock`` (between processes and threads alike); wait as long as it takes."""
    lock = filelock.FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        logger.info("waiting for another process to finish %s", path)
        lock.acquire()  # no timeout: the holder is making progress on a possibly large file
    try:
        yield
    finally:
        lock.release()


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def recorded_sha256(path: Path) -> str | None:
    """The sha256 recorded for `path`, or None (no record, or an unreadable one). Hashes nothing."""
    record = _read_json(record_path(path))
    return record["sha256"] if isinstance(record.get("sha256"), str) else None


def record_sha256(path: Path, digest: str, *, as_path: Path | None = None) -> None:
    """Record `digest` with `path`'s current size and mtime, beside `as_path` (default `path`).

    `as_path` lets a download record its `.part` under the final name before the rename (which
    keeps size and mtime), so a file at the final name is never without its record.
    """
    st = path.stat()
    record = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        atomic_write(record_path(as_path or path), json.dumps(record).encode())
    except OSError as e:
        # A read-only cache (e.g. baked into an image) still works; it is just re-hashed more often.
        logger.warning("could not record the sha256 of %s: %s", path, e)


def verify_file(path: str | os.PathLike[str], *, sha256: str | None = None, rehash: bool = False) -> str:
    """Check a file against its recorded sha256 (and `sha256`, if pinned); return its sha256.

    The file is re-hashed only if its size or mtime differ from the record, or if `rehash`. A file
    without a record is hashed and recorded (trust on first use). Raises `ChecksumMismatch` when
    the content differs from the record or from the pin; the file is left for the user to judge.
    """
    path = Path(path)
    record = _read_json(record_path(path))
    recorded = record.get("sha256") if isinstance(record.get("sha256"), str) else None
    st = path.stat()
    unchanged = (
        recorded is not None and record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns
    )
    if recorded is not None and unchanged and not rehash:
        digest = recorded
    else:
        logger.info("hashing %s (%s)", path, human_size(st.st_size))
        digest = sha256_file(path)
        if recorded is not None and recorded != digest:
            raise ChecksumMismatch(
                f"{path} changed since its sha256 was recorded (now {digest[:16]}..., recorded "
                f"{recorded[:16]}...); delete it and download it again"
            )
        if not unchanged:
            record_sha256(path, digest)
    if sha256 is not None and digest != sha256.lower():
        raise ChecksumMismatch(f"{path} has sha256 {digest}, expected {sha256.lower()}")
    return digest


def human_size(n: float) -> str:
    """1536 -> '1.5 KB' (binary multiples, as tqdm shows them)."""
    unit = "B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"


# ---- download ----------------------------------------------------------------------------------


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Download `url` to `dest` (unless `dest` already exists) and return `dest`.

    - An existing `dest` is returned without any network call (checked by `verify_file`).
    - Bytes go to ``<dest>.part``; a `.part` left by an interrupted attempt is resumed with an HTTP
      Range request (``If-Range`` makes the server send the whole file instead if it changed
      meanwhile). A server that ignores Range, or answers 416, is handled by starting over.
    - ``<dest>.lock`` is held during the transfer: a second caller (thread or process) waits, then
      returns the file the first one completed.
    - A short or broken transfer raises `DownloadError` and keeps only the `.part` (no connection
      at all: `HostUnreachable`); an HTTP error status raises `DownloadError` naming the URL and
      status; a `sha256` mismatch raises `ChecksumMismatch` and deletes the bytes. Only a complete,
      verified file is renamed (atomically) to `dest`, its sha256 recorded beside it.
    - `timeout` bounds every network wait (connecting, and each read), not the whole transfer.
    - The progress bar goes to stderr, and only to a terminal (with `progress`); progress also goes
      to the log every 10% (servers have no terminal) and to `on_progress(dest.name, done, total)`
      about once a second and at the end (for status displays such as the server's readiness).
    """
    dest = Path(dest)
    if dest.exists():
        verify_file(dest, sha256=sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest):
        if dest.exists():  # another process finished it while we waited for the lock
            verify_file(dest, sha256=sha256)
            return dest
        digest = _transfer(url, dest, progress=progress, timeout=timeout, on_progress=on_progress)
        part = part_path(dest)
        if sha256 is not None and digest != sha256.lower():
            part.unlink(missing_ok=True)
            _state_path(dest).unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"{url} has sha256 {digest}, expected {sha256.lower()}; the download was deleted"
            )
        record_sha256(part, digest, as_path=dest)
        os.replace(part, dest)
        _state_path(dest).unlink(missing_ok=True)
    logger.info("downloaded %s to %s", url, dest)
    return dest


def part_path(dest: Path) -> Path:
    """Where an unfinished download of `dest` is kept."""
    return dest.with_name(dest.name + ".part")


def _state_path(dest: Path) -> Path:
    # What the server said about the file when the .part was started (validator, size): If-Range.
    return dest.with_name(dest.name + ".part.json")


def _transfer(
    url: str, dest: Path, *, progress: bool, timeout: float, on_progress: ProgressCallback | None
) -> str:
    """Fill ``<dest>.part`` with the whole of `url` (resuming it if present); return its sha256."""
    part, state_path = part_path(dest), _state_path(dest)
    for _attempt in range(3):  # a resume may be refused twice at most: 416, then a wrong range
        offset = part.stat().st_size if part.exists() else 0
        state = _read_json(state_path) if offset else {}
        headers = {"Accept-Encoding": "identity"}  # byte counts must be the file's own
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if state.get("validator"):
                headers["If-Range"] = state["validator"]
        try:
            response = requests.get(url, headers=headers, stream=True, timeout=timeout)
        except requests.ConnectionError as e:  # includes a connect timeout
            raise HostUnreachable(f"cannot reach {url} ({_reason(e)})") from e
        except requests.RequestException as e:
            raise DownloadError(f"request for {url} failed ({_reason(e)})") from e
        with response:
            status = response.status_code
            if status == 416 and offset:
                total = _content_range(response.headers.get("Content-Range"))[2]
                if total == offset:  # the .part was complete already (stopped before the rename)
                    return sha256_file(part)
                logger.info("server refused to resume %s; starting over", url)
                part.unlink()
                continue
            if status >= 400:
                raise DownloadError(f"{url}: HTTP {status} {response.reason}")
            if status == 206 and offset:
                start, _end, total = _content_range(response.headers.get("Content-Range"))
                if start != offset or state.get("total") not in (None, total):
                    logger.info("server sent an unexpected range of %s; starting over", url)
                    part.unlink()
                    continue
                logger.info("resuming %s at byte %d", url, offset)
            elif status == 200:
                if offset:
                    logger.info(
                        "server sent all of %s (Range ignored, or the file changed); starting over", url
                    )
                offset = 0
                length = response.headers.get("Content-Length", "")
                total = int(length) if length.isdigit() else None
            else:
                raise DownloadError(f"{url}: unexpected HTTP {status} {response.reason}")
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            atomic_write(state_path, json.dumps({"validator": validator, "total": total}).encode())
            return _stream(
                response,
                part,
                offset=offset,
                total=total,
                url=url,
                progress=progress,
                on_progress=on_progress,
            )
    raise DownloadError(f"{url}: the server keeps refusing to resume; delete {part} and retry")


def _stream(
    response: requests.Response,
    part: Path,
    *,
    offset: int,
    total: int | None,
    url: str,
    progress: bool,
    on_progress: ProgressCallback | None,
) -> str:
    """Append the response body to `part` from `offset`; return the sha256 of the whole file.

    Progress goes to a terminal bar, to the log every 10% and to `on_progress` (see `download`)."""
    h = hashlib.sha256()
    if offset:  # fold in the bytes already on disk, so no second pass over the file is needed
        with open(part, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    received = offset
    name = part.name.removesuffix(".part")
    bar = tqdm(
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        disable=None if progress else True,
        leave=False,
    )
    last_report, last_decile = 0.0, -1

    def report(final: bool = False) -> None:
        nonlocal last_report, last_decile
        now = time.monotonic()
        if on_progress is not None and (final or now - last_report >= 1.0):
            on_progress(name, received, total)
            last_report = now
        decile = received * 10 // total if total else -1
        if total and decile > last_decile:
            logger.info(
                "downloading %s: %s of %s (%d%%)",
                name,
                human_size(received),
                human_size(total),
                received * 100 // total,
            )
            last_decile = decile

    try:
        with open(part, "ab" if offset else "wb") as f:
            try:
                for chunk in response.iter_content(_CHUNK):
                    f.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    report()
            except requests.RequestException as e:
                raise DownloadError(
                    f"download of {url} broke off after {received} of {total or '?'} bytes "
                    f"({_reason(e)}); {part} is kept: run again to resume"
                ) from e
            f.flush()
            os.fsync(f.fileno())  # the rename that follows must not publish unwritten blocks
        report(final=True)
    finally:
        bar.close()
    if total is not None and received != total:
        raise DownloadError(
            f"download of {url} ended after {received} of {total} bytes; {part} is kept: run again to resume"
        )
    return h.hexdigest()


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``bytes 10-99/100`` -> (10, 99, 100); ``bytes */100`` -> (None, None, 100); junk -> Nones."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None, None
    start, end, total = (int(g) if g and g != "*" else None for g in m.groups())
    return start, end, total


def _reason(e: BaseException) -> str:
    """A short, human cause for a requests/urllib3 error, e.g. ``[Errno 111] Connection refused``."""
    # requests wraps urllib3 errors (MaxRetryError -> NewConnectionError, ProtocolError -> ...);
    # the innermost one says what happened, and its last string argument is its message.
    seen: set[int] = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "reason", None)
        if isinstance(inner, BaseException):
            e = inner
        elif e.args and isinstance(e.args[0], BaseException):
            e = e.args[0]
        else:
            break
    texts = [a for a in e.args if isinstance(a, str)]
    text = (texts[-1] if texts else str(e)).strip()
    text = text.splitlines()[0] if text else type(e).__name__
    # urllib3 starts messages with the connection's repr: "HTTPConnection(host=.., port=..): "
    return re.sub(r"^(?:\w+\(host=[^)]*\)|<[^>]*>):\s*", "", text)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent or unreadable: treated as never written
    return value if isinstance(value, dict) else {}
