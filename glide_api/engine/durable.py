"""The durable embedded store: `MemoryJobStore` written through to SQLite (WAL) and image files.

A data dir holds:

    lock                            held (flock) by the one process that owns the dir
    jobs.sqlite3 (-wal, -shm)       jobs (admission order), their event histories, pending uploads
    images/<job id>/<index>.png     the PNGs of succeeded jobs

Every job transition and event is one SQLite transaction (journal WAL, synchronous NORMAL: a
committed change survives the process being killed; a power loss may lose the last ones, never
corrupts). A success's PNGs are written first (temp file, fsync, rename, fsync of the folder), then
the transaction that records it commits, so a recorded success always has its images. Previews are
not kept. Image folders no job records (a crash between the two steps) are removed at open.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import DataDirBusy, JobNotFound
from ..pipeline.params import INPUT_FIELDS
from .events import Event, event_from_dict
from .jobs import ImageResult, Job, JobResult
from .store import WEEK, MemoryJobStore

DATABASE = "jobs.sqlite3"
IMAGES = "images"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (pos INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inputs (id TEXT PRIMARY KEY, inputs TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (job_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)) WITHOUT ROWID;
"""


def open_durable_store(
    folder: Path,
    *,
    keep_finished: int,
    keep_finished_bytes: int,
    keep_finished_seconds: float = WEEK,
    clock: Callable[[], float] = time.time,
) -> MemoryJobStore:
    """The store of the data dir `folder` (made if missing), its jobs loaded and unfinished ones
    re-queued; `DataDirBusy` if another process holds it. `clock` (epoch seconds) ages finished jobs."""
    return MemoryJobStore(
        keep_finished=keep_finished,
        keep_finished_bytes=keep_finished_bytes,
        keep_finished_seconds=keep_finished_seconds,
        clock=clock,
        persistence=SqlitePersistence(folder),
    )


class SqlitePersistence:
    """`Persistence` in a data dir; holds the dir's lock from construction until `close`."""

    def __init__(self, folder: Path) -> None:
        self._folder = Path(folder)
        self._images = self._folder / IMAGES
        self._images.mkdir(parents=True, exist_ok=True)
        # Not thread-local: the store is closed by whichever thread stops the engine.
        self._lock = FileLock(self._folder / "lock", thread_local=False)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise DataDirBusy(
                f"data_dir {self._folder}: another glide-api process is using it; stop that one, or give "
                "this one another --data-dir (or 'none' to keep jobs in memory only)"
            ) from None
        self._db = sqlite3.connect(self._folder / DATABASE, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def load(self) -> list[tuple[Job, list[Event]]]:
        histories: dict[str, list[Event]] = {}
        for job_id, text in self._db.execute("SELECT job_id, event FROM events ORDER BY job_id, seq"):
            histories.setdefault(job_id, []).append(event_from_dict(json.loads(text)))
        inputs = {
            job_id: json.loads(text) for job_id, text in self._db.execute("SELECT id, inputs FROM inputs")
        }
        loaded = []
        for job_id, text in self._db.execute("SELECT id, record FROM jobs ORDER BY pos"):
            record = json.loads(text)
            record["request"].update(inputs.get(job_id, {}))
            folder = self._images / job_id
            job = Job.from_record(record, read_of=lambda i, folder=folder: _reader(folder / f"{i}.png"))
            loaded.append((job, histories.get(job_id, [])))
        kept = {job.id for job, _ in loaded if job.result is not None}
        for folder in self._images.iterdir():
            if folder.name not in kept:
                shutil.rmtree(folder, ignore_errors=True)
        return loaded

    def write(self, job: Job, event: Event | None) -> None:
        record = job.to_record()
        uploads = {name: record["request"].get(name) for name in INPUT_FIELDS}
        record["request"].update(dict.fromkeys(INPUT_FIELDS))  # kept apart: written once, not per step
        with self._db:
            self._db.execute(
                "INSERT INTO jobs (id, record) VALUES (?, ?)"
                " ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                (job.id, json.dumps(record)),
            )
            if job.done:
                self._db.execute("DELETE FROM inputs WHERE id = ?", (job.id,))
            elif event is not None and event.seq == 0 and any(uploads.values()):
                self._db.execute(
                    "INSERT INTO inputs (id, inputs) VALUES (?, ?)", (job.id, json.dumps(uploads))
                )
            if event is not None:
                self._db.execute(
                    "INSERT INTO events (job_id, seq, event) VALUES (?, ?, ?)",
                    (job.id, event.seq, json.dumps(event.to_dict())),
                )

    def keep_images(self, job_id: str, result: JobResult) -> JobResult:
        folder = self._images / job_id
        folder.mkdir(exist_ok=True)
        images = []
        for i, image in enumerate(result.images):
            path = folder / f"{i}.png"
            temp = folder / f".{i}.png.tmp"
            with open(temp, "wb") as f:
                f.write(image.png)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
            images.append(
                ImageResult(seed=image.seed, metadata=image.metadata, size=image.size, read=_reader(path))
            )
        _fsync_folder(folder)
        _fsync_folder(self._images)
        return dataclasses.replace(result, images=tuple(images))

    def forget(self, job_id: str, *, images: bool) -> None:
        with self._db:
            for table, column in (("jobs", "id"), ("inputs", "id"), ("events", "job_id")):
                self._db.execute(f"DELETE FROM {table} WHERE {column} = ?", (job_id,))
        if images:
            self.forget_images(job_id)

    def forget_images(self, job_id: str) -> None:
        shutil.rmtree(self._images / job_id, ignore_errors=True)

    def close(self) -> None:
        self._db.close()
        self._lock.release()


def _reader(path: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise JobNotFound(f"image file {path} is gone: its job is no longer kept") from None

    return read


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
