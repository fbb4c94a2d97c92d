"""The official files in the cache: fetched once, checked, checkpoints converted to safetensors.

Every function takes a `WeightsSource` (the cache folder, mirror, offline, progress). The transfer
itself (resume, locks, hash records) is `glide_api.download`; the conversion is `tensor_files`.

Cache layout (flat, one folder)::

    base.pt                  the official checkpoint, as downloaded
    base.pt.sha256.json      its recorded sha256 (+ size and mtime: see "Hashing" below)
    base.safetensors         the same tensors converted once; its header names the .pt's sha256
    base.pt.part             an unfinished download, resumed by the next attempt
    encoder.json, vocab.bpe  the GPT-2 BPE files (sha256 pinned in the registry)

Hashing (cost vs. safety): OpenAI publishes no hashes for the ``.pt`` files, so the sha256 of the
first download is recorded and later reads are checked against it; a user may also pin a hash
(``sha256=``), checked on download and on every load. Hashing 1.5 GB takes seconds, so a full hash
is computed only where the bytes pass through us anyway: while streaming a download, and when
converting to safetensors (which reads the whole file). Every other load compares the file's size
and mtime with the record (as make and rsync do) and re-hashes only a file that changed;
`verify_file(..., rehash=True)` forces a full check. The conversion carries the hash of the
``.pt`` it came from in its header, so a replaced ``.pt`` is never served through a stale
conversion.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from glide_api.download import download, file_lock, part_path, recorded_sha256, verify_file
from glide_api.errors import ChecksumMismatch, HostUnreachable, InvalidParameter, WeightsNotFound
from glide_api.models import registry
from glide_api.models.registry import TOKENIZER_FILES, registry_entry
from glide_api.models.tensor_files import convert_checkpoint, safetensors_metadata
from glide_api.models.weights_source import WeightsSource, default_cache_dir

if TYPE_CHECKING:
    import torch

__all__ = [
    "CachedFile",
    "MissingWeights",
    "cached_models",
    "fetch_checkpoint",
    "fetch_file",
    "is_cached",
    "load_checkpoint",
    "missing_weights",
    "tokenizer_files",
]

logger = logging.getLogger(__name__)


def _cache_option(source: WeightsSource) -> str:
    # Name a non-default cache too, so a printed command fills the folder that was searched.
    return "" if source.cache == default_cache_dir() else f" --cache-dir {source.cache}"


def _fetch_command(name: str, source: WeightsSource) -> str:
    return f"glide-api download {name}{_cache_option(source)}"


def fetch_file(name: str, *, source: WeightsSource, sha256: str | None = None) -> Path:
    """The path of registry file `name` in the cache, downloaded first if missing.

    A cached file is checked (`verify_file`: record, the registry's pin, `sha256`) with no network
    call. A missing file with `source.offline`, or whose server cannot be reached, raises
    `WeightsNotFound` with one line naming the file, the folder and the command that fetches it.
    Other failures raise `DownloadError` or `ChecksumMismatch` (see `glide_api.download.download`).
    """
    entry = registry_entry(name)
    dest = source.cache / entry.filename
    if sha256 and entry.sha256 and sha256.lower() != entry.sha256:
        raise InvalidParameter(f"sha256: {sha256!r} contradicts the pinned hash of {name}, {entry.sha256}")
    pin = sha256 or entry.sha256
    if dest.exists():
        verify_file(dest, sha256=pin)
        return dest
    hint = _fetch_command("tokenizer" if name in TOKENIZER_FILES else name, source)
    if source.offline:
        raise WeightsNotFound(
            f"{entry.filename} is not in the cache {source.cache} and downloads are off "
            f"(offline, or GLIDE_API_OFFLINE is set); fetch it with: {hint}"
        )
    try:
        return download(
            entry.download_url(source.base_url),
            dest,
            sha256=pin,
            progress=source.progress,
            timeout=source.timeout,
            on_progress=source.on_progress,
        )
    except HostUnreachable as e:
        raise WeightsNotFound(
            f"{entry.filename} is not in the cache {source.cache}, and downloading it "
            f"failed: {e}; fetch it with: {hint}"
        ) from e


def fetch_checkpoint(name: str, *, source: WeightsSource, sha256: str | None = None) -> Path:
    """The path of checkpoint `name` converted to safetensors, downloading/converting as needed.

    The ``.pt`` is fetched (`fetch_file`) and converted once (`convert_checkpoint`); the
    conversion is reused while its header names the ``.pt``'s current sha256, else redone. A
    conversion whose ``.pt`` was deleted (to save disk) is used as it is, with no network call;
    `sha256` then pins the hash of the ``.pt`` it was made from.
    """
    entry = registry_entry(name)
    if entry.converted_name is None:
        raise InvalidParameter(f"{name} is not a checkpoint (it has no .pt file)")
    pt, st = source.cache / entry.filename, source.cache / entry.converted_name
    if not pt.exists() and st.exists():
        verify_file(st)
        made_from = safetensors_metadata(st).get("source_sha256")
        if sha256 is not None and made_from != sha256.lower():
            raise ChecksumMismatch(
                f"{st} was converted from a file with sha256 {made_from}, expected {sha256.lower()}"
            )
        return st
    fetch_file(name, source=source, sha256=sha256)
    digest = verify_file(pt)  # reads the record fetch_file has just checked: no hashing
    if _is_conversion_of(st, digest):
        return st
    with file_lock(st):
        if not _is_conversion_of(st, digest):  # not done by another process meanwhile
            convert_checkpoint(pt, st)
    return st


def load_checkpoint(
    name: str, *, source: WeightsSource, sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """The state_dict of checkpoint `name`, memory-mapped from its safetensors conversion.

    Downloads and converts as needed; options and errors are those of `fetch_checkpoint`.
    """
    from safetensors.torch import load_file

    return load_file(fetch_checkpoint(name, source=source, sha256=sha256))


def tokenizer_files(*, source: WeightsSource) -> tuple[Path, Path]:
    """The paths of the official GPT-2 BPE files ``(encoder.json, vocab.bpe)`` in the cache.

    Downloaded once and checked against the pinned sha256 (see `fetch_file` for errors).
    """
    encoder_json, vocab_bpe = (fetch_file(name, source=source) for name in TOKENIZER_FILES)
    return encoder_json, vocab_bpe


def _is_conversion_of(st: Path, digest: str) -> bool:
    if not st.exists():
        return False
    try:
        verify_file(st)
        made_from = safetensors_metadata(st).get("source_sha256")
    except (ChecksumMismatch, ValueError) as e:
        logger.warning("%s; converting again", e)
        return False
    return made_from == digest


# ---- what is cached ----------------------------------------------------------------------------


def is_cached(name: str, *, source: WeightsSource) -> bool:
    """Whether registry file `name` itself (not only its conversion or a ``.part``) is in the cache."""
    return (source.cache / registry_entry(name).filename).is_file()


@dataclass(frozen=True)
class CachedFile:
    """A registry file found in the cache: downloaded, converted, or partly downloaded."""

    name: str
    path: Path | None  # the downloaded file; None when only its conversion or a .part is there
    size: int  # bytes of the downloaded file, else of its conversion, else of the .part
    converted: Path | None  # the safetensors conversion, if any
    sha256: str | None  # the recorded sha256 of the downloaded file (read, not recomputed)
    partial: bool = False  # only an unfinished download (.part) is there


def cached_models(*, source: WeightsSource) -> list[CachedFile]:
    """The registry files in the cache, in registry order. Reads records only: hashes nothing."""
    folder = source.cache
    found = []
    for entry in registry.REGISTRY.values():
        path = folder / entry.filename
        st = folder / entry.converted_name if entry.converted_name else None
        converted = st if st is not None and st.is_file() else None
        if path.is_file():
            found.append(CachedFile(entry.name, path, path.stat().st_size, converted, recorded_sha256(path)))
        elif converted is not None:
            try:
                made_from = safetensors_metadata(converted).get("source_sha256")
            except (OSError, ValueError):
                made_from = None  # listed anyway; loading it will report the problem
            found.append(CachedFile(entry.name, None, converted.stat().st_size, converted, made_from))
        elif part_path(path).is_file():
            found.append(
                CachedFile(entry.name, None, part_path(path).stat().st_size, None, None, partial=True)
            )
    return found


# ---- what a choice of models needs -------------------------------------------------------------


@dataclass(frozen=True)
class MissingWeights:
    """What some models need that is not on disk, and the one command that fetches it; `a + b`
    is what both need."""

    files: tuple[str, ...] = ()  # official files missing from the cache first, then absent folders
    downloads: tuple[str, ...] = ()  # the registry names of those official files
    cache_option: str = ""  # the command's `--cache-dir` when the cache is not the default one

    @property
    def command(self) -> str | None:
        """One `glide-api download` that fetches every missing official file, in order; None when
        there is none. The command always fetches the tokenizer files first, so it names only the
        checkpoints ("tokenizer" when the tokenizer files alone are missing)."""
        named = [n for n in self.downloads if n not in TOKENIZER_FILES] or (
            ["tokenizer"] if self.downloads else []
        )
        return f"glide-api download {' '.join(named)}{self.cache_option}" if named else None

    def why(self, error: WeightsNotFound | None = None) -> str:
        """Why the files were not fetched: `error`'s failed download, else downloads being off (or,
        with only model folders missing, nothing to download)."""
        cause = error.__cause__ if error is not None else None
        if cause is not None:
            return f"downloading failed: {cause}"
        return "downloads are off (offline)" if self.downloads else "no such model folder"

    def message(self, error: WeightsNotFound | None = None) -> str:
        """One line: the missing files, why they were not fetched and the command that fetches them."""
        fetch = f"; fetch them with: {self.command}" if self.command else ""
        return f"missing {', '.join(self.files)}; {self.why(error)}{fetch}"

    def __add__(self, other: MissingWeights) -> MissingWeights:
        return MissingWeights(
            files=tuple(dict.fromkeys(self.files + other.files)),
            downloads=tuple(dict.fromkeys(self.downloads + other.downloads)),
            cache_option=self.cache_option or other.cache_option,
        )


def missing_weights(specs: Iterable[str | None], *, source: WeightsSource) -> MissingWeights:
    """What loading `specs` (official names or model folders; None loads nothing) needs that is not
    on disk. Reads the disk only.

    An official model needs its checkpoint and the GPT-2 tokenizer files; a model folder needs to
    exist, and needs the tokenizer files from the cache unless it carries a tokenizer of its own.
    """
    from glide_api.models.tokenizer import gpt2_files_in, tokenizer_type  # torch: only when asked

    wanted: list[str] = [*TOKENIZER_FILES]  # registry names, the tokenizer first as downloads go
    tokenizer = False
    absent: list[str] = []  # model folders
    for spec in specs:
        if spec is None:
            continue
        if spec in registry.CHECKPOINTS:
            wanted.append(spec)
            tokenizer = True
        elif not Path(spec).expanduser().is_dir():
            absent.append(spec)
        elif tokenizer_type(spec) != "bytes" and gpt2_files_in(spec) is None:
            tokenizer = True
    cached = {c.name for c in cached_models(source=source) if not c.partial}
    fetch = [n for n in dict.fromkeys(wanted) if n not in cached and (tokenizer or n not in TOKENIZER_FILES)]
    return MissingWeights(
        files=(*(str(source.cache / registry.REGISTRY[n].filename) for n in fetch), *absent),
        downloads=tuple(fetch),
        cache_option=_cache_option(source),
    )
