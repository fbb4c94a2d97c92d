"""Where weights live: the registry of official files, the cache, conversion, model folders.

This is the one module that knows file names, URLs and cache paths. Everything else asks it for a
`(ModelConfig, state_dict)` (`resolve_model`) or for the tokenizer files (`tokenizer_files`) and
builds networks with `glide_api.models.glide.create_model(config)`. The transfer itself (resume,
locks, hash records) is `glide_api.models.download`.

Cache layout (flat, one folder)::

    base.pt                  the official checkpoint, as downloaded
    base.pt.sha256.json      its recorded sha256 (+ size and mtime: see "Hashing" below)
    base.safetensors         the same tensors converted once; its header names the .pt's sha256
    base.pt.part             an unfinished download, resumed by the next attempt
    encoder.json, vocab.bpe  the GPT-2 BPE files (sha256 pinned in the registry)

Environment variables (read when a function runs, never on import):

- ``GLIDE_API_CACHE``: the cache folder (default: ``platformdirs.user_cache_dir("glide-api")``).
  Every function also takes ``cache=``.
- ``GLIDE_API_OFFLINE``: ``1``/``true``/``yes``/``on`` forbids network access; a file missing from
  the cache then raises `WeightsNotFound` instead of being downloaded.
- ``GLIDE_API_BASE_URL``: a mirror to download from instead of OpenAI's servers. It holds the
  files under their plain names (``<mirror>/base.pt``, ``<mirror>/encoder.json``, ...), so a
  folder of downloaded files behind any static web server is a mirror. Every function also takes
  ``base_url=``.

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

import json
import logging
import os
import stat
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import platformdirs

from glide_api.errors import ChecksumMismatch, HostUnreachable, WeightsNotFound
from glide_api.models.config import ModelConfig
from glide_api.models.download import (
    DEFAULT_TIMEOUT,
    atomic_write,
    download,
    file_lock,
    part_path,
    record_sha256,
    recorded_sha256,
    sha256_file,
    temp_path,
    verify_file,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_DOWNLOADS",
    "DEFAULT_TIMEOUT",
    "DOWNLOAD_GROUPS",
    "REGISTRY",
    "TOKENIZER_FILES",
    "CachedFile",
    "RemoteFile",
    "cache_dir",
    "cached_models",
    "convert_checkpoint",
    "download",
    "download_names",
    "fetch_checkpoint",
    "fetch_file",
    "is_cached",
    "load_checkpoint",
    "offline_env",
    "read_model_folder",
    "resolve_model",
    "save_model_folder",
    "tokenizer_files",
    "verify_file",
]

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
StrPath = str | os.PathLike[str]


# ---- registry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One official file: its registry name, where it is published, and what it is."""

    name: str
    url: str
    sha256: str | None = None  # pinned where the publisher's bytes are known, else recorded
    preset: str | None = None  # the `ModelConfig.preset` name, for the diffusion checkpoints

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]

    @property
    def converted_name(self) -> str | None:
        """The file name of the safetensors conversion, for `.pt` checkpoints; else None."""
        stem, dot, ext = self.filename.rpartition(".")
        return f"{stem}.safetensors" if dot and ext == "pt" else None

    def source(self, base_url: str | None = None) -> str:
        """The URL to fetch from: ``<base_url or $GLIDE_API_BASE_URL>/<filename>``, else `url`."""
        mirror = base_url or os.environ.get("GLIDE_API_BASE_URL") or ""
        return f"{mirror.rstrip('/')}/{self.filename}" if mirror else self.url


_DIFFUSION = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/"
_GPT2 = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
_ENTRIES = (
    RemoteFile("base", _DIFFUSION + "base.pt", preset="base"),
    RemoteFile("upsample", _DIFFUSION + "upsample.pt", preset="upsample"),
    RemoteFile("base-inpaint", _DIFFUSION + "base_inpaint.pt", preset="base-inpaint"),
    RemoteFile("upsample-inpaint", _DIFFUSION + "upsample_inpaint.pt", preset="upsample-inpaint"),
    RemoteFile("clip/image-enc", _DIFFUSION + "clip_image_enc.pt"),
    RemoteFile("clip/text-enc", _DIFFUSION + "clip_text_enc.pt"),
    RemoteFile(
        "gpt2/encoder.json",
        _GPT2 + "encoder.json",
        sha256="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
    RemoteFile(
        "gpt2/vocab.bpe",
        _GPT2 + "vocab.bpe",
        sha256="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
)
REGISTRY: Mapping[str, RemoteFile] = MappingProxyType({e.name: e for e in _ENTRIES})
CHECKPOINTS: tuple[str, ...] = tuple(e.name for e in _ENTRIES if e.preset)  # the diffusion models
TOKENIZER_FILES: tuple[str, str] = ("gpt2/encoder.json", "gpt2/vocab.bpe")


# Names that stand for several registry files when downloading, and what is fetched when none is named.
DOWNLOAD_GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"all": CHECKPOINTS, "tokenizer": TOKENIZER_FILES}
)
DEFAULT_DOWNLOADS: tuple[str, ...] = ("base", "upsample")


def download_names(requested: Iterable[str]) -> list[str]:
    """The registry names to download for `requested` names and `DOWNLOAD_GROUPS`, in order.

    The tokenizer files come first (small, and the official models need them), then the rest as
    requested, each once. Raises `ValueError` for a name that is neither, listing the valid ones.
    """
    names = list(TOKENIZER_FILES)
    for name in requested:
        for member in DOWNLOAD_GROUPS.get(name, (name,)):
            if member not in REGISTRY:
                raise ValueError(
                    f"unknown name {name!r}; expected one of {', '.join([*REGISTRY, *DOWNLOAD_GROUPS])}"
                )
            if member not in names:
                names.append(member)
    return names


def _entry(name: str) -> RemoteFile:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown file name {name!r}; expected one of {', '.join(REGISTRY)}") from None


# ---- environment -------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The cache folder: ``$GLIDE_API_CACHE`` if set, else the user cache. Never created here."""
    env = os.environ.get("GLIDE_API_CACHE")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("glide-api"))


def _cache(cache: StrPath | None) -> Path:
    return Path(cache).expanduser() if cache is not None else cache_dir()


def offline_env() -> bool:
    """Whether ``GLIDE_API_OFFLINE`` forbids downloads (``1``, ``true``, ``yes`` or ``on``)."""
    return os.environ.get("GLIDE_API_OFFLINE", "").strip().lower() in _TRUE


def _fetch_command(name: str, cache: Path) -> str:
    # Name a non-default cache too, so the printed command fills the folder that was searched.
    extra = "" if cache == cache_dir() else f" --cache-dir {cache}"
    return f"glide-api download {name}{extra}"


# ---- official files: fetch, convert, load ------------------------------------------------------


def fetch_file(
    name: str,
    *,
    cache: StrPath | None = None,
    base_url: str | None = None,
    offline: bool = False,
    progress: bool = True,
    sha256: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """The path of registry file `name` in the cache, downloaded first if missing.

    A cached file is checked (`verify_file`: record, the registry's pin, `sha256`) with no network
    call. A missing file with `offline` (or ``GLIDE_API_OFFLINE``), or whose server cannot be
    reached, raises `WeightsNotFound` with one line naming the file, the folder and the command
    that fetches it. Other failures raise `DownloadError` or `ChecksumMismatch` (see `download`).
    """
    entry = _entry(name)
    folder = _cache(cache)
    dest = folder / entry.filename
    if sha256 and entry.sha256 and sha256.lower() != entry.sha256:
        raise ValueError(f"sha256={sha256!r} contradicts the pinned hash of {name}, {entry.sha256}")
    pin = sha256 or entry.sha256
    if dest.exists():
        verify_file(dest, sha256=pin)
        return dest
    hint = _fetch_command("tokenizer" if name in TOKENIZER_FILES else name, folder)
    if offline or offline_env():
        why = "offline=True" if offline else "GLIDE_API_OFFLINE is set"
        raise WeightsNotFound(
            f"{entry.filename} is not in the cache {folder} and downloads are "
            f"off ({why}); fetch it with: {hint}"
        )
    try:
        return download(entry.source(base_url), dest, sha256=pin, progress=progress, timeout=timeout)
    except HostUnreachable as e:
        raise WeightsNotFound(
            f"{entry.filename} is not in the cache {folder}, and downloading it "
            f"failed: {e}; fetch it with: {hint}"
        ) from e


def fetch_checkpoint(
    name: str,
    *,
    cache: StrPath | None = None,
    base_url: str | None = None,
    offline: bool = False,
    progress: bool = True,
    sha256: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """The path of checkpoint `name` converted to safetensors, downloading/converting as needed.

    The ``.pt`` is fetched (`fetch_file`) and converted once (`convert_checkpoint`); the
    conversion is reused while its header names the ``.pt``'s current sha256, else redone. A
    conversion whose ``.pt`` was deleted (to save disk) is used as it is, with no network call;
    `sha256` then pins the hash of the ``.pt`` it was made from.
    """
    entry = _entry(name)
    if entry.converted_name is None:
        raise ValueError(f"{name} is not a checkpoint (it has no .pt file)")
    folder = _cache(cache)
    pt, st = folder / entry.filename, folder / entry.converted_name
    if not pt.exists() and st.exists():
        verify_file(st)
        source = _safetensors_metadata(st).get("source_sha256")
        if sha256 is not None and source != sha256.lower():
            raise ChecksumMismatch(
                f"{st} was converted from a file with sha256 {source}, expected {sha256.lower()}"
            )
        return st
    fetch_file(
        name,
        cache=folder,
        base_url=base_url,
        offline=offline,
        progress=progress,
        sha256=sha256,
        timeout=timeout,
    )
    digest = verify_file(pt)  # reads the record fetch_file has just checked: no hashing
    if _is_conversion_of(st, digest):
        return st
    with file_lock(st):
        if not _is_conversion_of(st, digest):  # not done by another process meanwhile
            convert_checkpoint(pt, st)
    return st


def load_checkpoint(
    name: str,
    *,
    cache: StrPath | None = None,
    base_url: str | None = None,
    offline: bool = False,
    progress: bool = True,
    sha256: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, torch.Tensor]:
    """The state_dict of checkpoint `name`, memory-mapped from its safetensors conversion.

    Downloads and converts as needed; options and errors are those of `fetch_checkpoint`.
    """
    from safetensors.torch import load_file

    return load_file(
        fetch_checkpoint(
            name,
            cache=cache,
            base_url=base_url,
            offline=offline,
            progress=progress,
            sha256=sha256,
            timeout=timeout,
        )
    )


def convert_checkpoint(pt: StrPath, dest: StrPath | None = None) -> Path:
    """Convert a ``.pt`` state_dict to safetensors (default: beside it) and return the new path.

    The ``.pt`` is hashed in full (it is read whole anyway) and must match its record; that hash is
    written into the output's header as ``source_sha256``. The output appears atomically, with its
    own sha256 recorded. Raises `ValueError` if the file is not a flat name -> tensor mapping.
    """
    pt = Path(pt)
    dest = Path(dest) if dest is not None else pt.with_suffix(".safetensors")
    digest = verify_file(pt, rehash=True)
    logger.info("converting %s to %s", pt, dest)
    tensors = _plain_tensors(_torch_load(pt), source=pt)
    _save_safetensors(
        tensors, dest, record=True, metadata={"format": "pt", "source_sha256": digest, "source_file": pt.name}
    )
    return dest


def _save_safetensors(
    tensors: dict[str, torch.Tensor], path: Path, *, metadata: dict[str, str], record: bool = False
) -> None:
    """`safetensors.torch.save_file`, made atomic and durable, with an ordinary file's mode.

    With `record`, the file's sha256 is recorded (before it appears) for `verify_file`.
    """
    from safetensors.torch import save_file

    tmp = temp_path(path)
    try:
        with open(tmp, "wb"):  # an ordinary new file: the mode the umask allows (e.g. 0644)
            pass
        mode = stat.S_IMODE(tmp.stat().st_mode)
        save_file(tensors, tmp, metadata=metadata)
        # save_file renames a private (0600) temp file over `tmp`; a shared cache needs the usual
        # mode, and the rename below must not publish unwritten blocks.
        os.chmod(tmp, mode)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if record:  # hashed just after writing, from the page cache: cheap
            record_sha256(tmp, sha256_file(tmp), as_path=path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _torch_load(path: Path) -> object:
    """`torch.load` a ``.pt`` safely: tensors and plain containers only, no code from the pickle."""
    import torch

    try:
        # mmap: tensors stay in the page cache instead of a second private copy of the file.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # pre-zip format files


def _is_conversion_of(st: Path, digest: str) -> bool:
    if not st.exists():
        return False
    try:
        verify_file(st)
        source = _safetensors_metadata(st).get("source_sha256")
    except (ChecksumMismatch, ValueError) as e:
        logger.warning("%s; converting again", e)
        return False
    return source == digest


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header, read without torch (u64 length + JSON)."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        size = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
        if not 0 < size < 1 << 27:
            raise ValueError(f"{path} is not a safetensors file")
        header = json.loads(f.read(size))
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _plain_tensors(state_dict: object, *, source: Path) -> dict[str, torch.Tensor]:
    """A flat name -> contiguous CPU tensor dict, as safetensors wants it (no shared memory)."""
    import torch

    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise ValueError(f"{source} does not hold a flat state_dict (a mapping of names to tensors)")
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in state_dict.items():
        t = tensor.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        # safetensors refuses tensors sharing memory (tied weights): give later ones their own copy.
        out[key] = t.clone() if ptr in seen and t.numel() else t
        seen.add(ptr)
    return out


# ---- tokenizer files ---------------------------------------------------------------------------


def tokenizer_files(
    *,
    folder: StrPath | None = None,
    offline: bool = False,
    cache: StrPath | None = None,
    base_url: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[Path, Path]:
    """The paths of the GPT-2 BPE files ``(encoder.json, vocab.bpe)``.

    From `folder` (e.g. a model folder with its own tokenizer) when it holds both; otherwise from
    the cache, downloaded once and checked against the pinned sha256 (see `fetch_file` for
    errors). A folder holding only one of the two raises `WeightsNotFound`: silently pairing it
    with the official other half would garble every prompt.
    """
    if folder is not None:
        enc, bpe = Path(folder) / "encoder.json", Path(folder) / "vocab.bpe"
        if enc.is_file() and bpe.is_file():
            return enc, bpe
        if enc.is_file() or bpe.is_file():
            missing = bpe if enc.is_file() else enc
            raise WeightsNotFound(f"{folder} holds half a tokenizer: {missing.name} is missing")
    enc, bpe = (
        fetch_file(name, cache=cache, base_url=base_url, offline=offline, progress=progress, timeout=timeout)
        for name in TOKENIZER_FILES
    )
    return enc, bpe


# ---- model folders -----------------------------------------------------------------------------

_CONFIG, _WEIGHTS, _WEIGHTS_PT = "config.json", "model.safetensors", "model.pt"


def save_model_folder(path: StrPath, *, config: ModelConfig, state_dict: Mapping[str, torch.Tensor]) -> Path:
    """Write a model folder, ``config.json`` (official option names) and ``model.safetensors``.

    Each file appears atomically, weights first, so a config.json is never ahead of its weights.
    Other files in the folder (tokenizer, an older model.pt) are left alone. Returns the folder.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    _save_safetensors(_plain_tensors(state_dict, source=folder), folder / _WEIGHTS, metadata={"format": "pt"})
    text = json.dumps(config.to_options(), indent=2, sort_keys=True) + "\n"
    atomic_write(folder / _CONFIG, text.encode())
    return folder


def read_model_folder(
    path: StrPath,
    *,
    sha256: str | None = None,
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read a model folder: ``config.json`` and ``model.safetensors`` (preferred) or ``model.pt``.

    Raises `WeightsNotFound` for a missing folder or missing weights; `ValueError` for a path that
    is not a folder, a folder without config.json, or an invalid config; `ChecksumMismatch` when
    the weights file's sha256 differs from `sha256` (hashed in full each time: no records are
    written into user folders).
    """
    folder = Path(path)
    expected = f"{_CONFIG} (official option names) and {_WEIGHTS} or {_WEIGHTS_PT}"
    if not folder.exists():
        raise WeightsNotFound(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a model folder: expected a folder holding {expected}")
    if not (folder / _CONFIG).is_file():
        raise ValueError(
            f"{folder} is not a model folder: {_CONFIG} is missing (a model folder holds {expected})"
        )
    config = ModelConfig.from_json_file(folder / _CONFIG)
    weights = next((folder / n for n in (_WEIGHTS, _WEIGHTS_PT) if (folder / n).is_file()), None)
    if weights is None:
        raise WeightsNotFound(f"model folder {folder} has no weights: expected {_WEIGHTS} or {_WEIGHTS_PT}")
    if sha256 is not None and (digest := sha256_file(weights)) != sha256.lower():
        raise ChecksumMismatch(f"{weights} has sha256 {digest}, expected {sha256.lower()}")
    if weights.name == _WEIGHTS:
        from safetensors.torch import load_file

        return config, load_file(weights)
    return config, _plain_tensors(_torch_load(weights), source=weights)


# ---- model specs -------------------------------------------------------------------------------


def resolve_model(
    spec: str,
    *,
    cache: StrPath | None = None,
    base_url: str | None = None,
    offline: bool = False,
    progress: bool = True,
    sha256: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The configuration and state_dict that `spec` names.

    `spec` is an official name (`CHECKPOINTS`; from the cache, downloaded if needed, see
    `fetch_checkpoint`) or the path of a model folder (`read_model_folder`). Official names win
    over same-named folders in the working directory: write ``./base`` for such a folder.
    `sha256` pins the weights file. Build the network with
    ``glide_api.models.glide.create_model(config)`` and load the state_dict into it strictly.
    Raises `ValueError` for a spec that is neither, listing the official names. (A model
    folder's own tokenizer, if any, comes from ``tokenizer_files(folder=spec)``.)
    """
    if spec in CHECKPOINTS:
        state_dict = load_checkpoint(
            spec,
            cache=cache,
            base_url=base_url,
            offline=offline,
            progress=progress,
            sha256=sha256,
            timeout=timeout,
        )
        return ModelConfig.preset(REGISTRY[spec].preset or spec), state_dict
    if spec in REGISTRY:
        raise ValueError(
            f"{spec} is a download-only file, not a GLIDE model; models are "
            f"{', '.join(CHECKPOINTS)} or a model folder"
        )
    if spec and Path(spec).expanduser().exists():
        return read_model_folder(Path(spec).expanduser(), sha256=sha256)
    raise ValueError(
        f"unknown model {spec!r}: neither an official name "
        f"({', '.join(CHECKPOINTS)}) nor an existing model folder"
    )


# ---- what is cached ----------------------------------------------------------------------------


def is_cached(name: str, *, cache: StrPath | None = None) -> bool:
    """Whether registry file `name` itself (not only its conversion or a ``.part``) is in the cache."""
    return (_cache(cache) / REGISTRY[name].filename).is_file()


@dataclass(frozen=True)
class CachedFile:
    """A registry file found in the cache: downloaded, converted, or partly downloaded."""

    name: str
    path: Path | None  # the downloaded file; None when only its conversion or a .part is there
    size: int  # bytes of the downloaded file, else of its conversion, else of the .part
    converted: Path | None  # the safetensors conversion, if any
    sha256: str | None  # the recorded sha256 of the downloaded file (read, not recomputed)
    partial: bool = False  # only an unfinished download (.part) is there


def cached_models(*, cache: StrPath | None = None) -> list[CachedFile]:
    """The registry files in the cache, in registry order. Reads records only: hashes nothing."""
    folder = _cache(cache)
    found = []
    for entry in REGISTRY.values():
        path = folder / entry.filename
        st = folder / entry.converted_name if entry.converted_name else None
        converted = st if st is not None and st.is_file() else None
        if path.is_file():
            found.append(CachedFile(entry.name, path, path.stat().st_size, converted, recorded_sha256(path)))
        elif converted is not None:
            try:
                source = _safetensors_metadata(converted).get("source_sha256")
            except (OSError, ValueError):
                source = None  # listed anyway; loading it will report the problem
            found.append(CachedFile(entry.name, None, converted.stat().st_size, converted, source))
        elif part_path(path).is_file():
            found.append(
                CachedFile(entry.name, None, part_path(path).stat().st_size, None, None, partial=True)
            )
    return found
