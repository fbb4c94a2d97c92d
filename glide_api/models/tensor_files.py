"""Tensor files on disk: safe ``.pt`` reading, atomic safetensors writing, ``.pt`` -> safetensors.

Used by `official_files` (the cache's conversions) and `model_folders` (a model's weights).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from glide_api.download import record_sha256, sha256_file, temp_path, verify_file
from glide_api.errors import InvalidParameter

if TYPE_CHECKING:
    import torch

__all__ = ["convert_checkpoint", "plain_tensors", "safetensors_metadata", "save_safetensors", "torch_load"]

logger = logging.getLogger(__name__)


def convert_checkpoint(pt: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None) -> Path:
    """Convert a ``.pt`` state_dict to safetensors (default: beside it) and return the new path.

    The ``.pt`` is hashed in full (it is read whole anyway) and must match its record; that hash is
    written into the output's header as ``source_sha256``. The output appears atomically, with its
    own sha256 recorded. Raises `InvalidParameter` if the file is not a flat name -> tensor mapping.
    """
    pt = Path(pt)
    dest = Path(dest) if dest is not None else pt.with_suffix(".safetensors")
    digest = verify_file(pt, rehash=True)
    logger.info("converting %s to %s", pt, dest)
    tensors = plain_tensors(torch_load(pt), source=pt)
    save_safetensors(
        tensors, dest, record=True, metadata={"format": "pt", "source_sha256": digest, "source_file": pt.name}
    )
    return dest


def save_safetensors(
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


def torch_load(path: Path) -> object:
    """`torch.load` a ``.pt`` safely: tensors and plain containers only, no code from the pickle."""
    import torch

    try:
        # mmap: tensors stay in the page cache instead of a second private copy of the file.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # pre-zip format files


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header, read without torch (u64 length + JSON)."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        size = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
        if not 0 < size < 1 << 27:
            raise InvalidParameter(f"{path} is not a safetensors file")
        header = json.loads(f.read(size))
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def plain_tensors(state_dict: object, *, source: Path) -> dict[str, torch.Tensor]:
    """A flat name -> contiguous CPU tensor dict, as safetensors wants it (no shared memory)."""
    import torch

    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise InvalidParameter(f"{source} does not hold a flat state_dict (a mapping of names to tensors)")
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in state_dict.items():
        t = tensor.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        # safetensors refuses tensors sharing memory (tied weights): give later ones their own copy.
        out[key] = t.clone() if ptr in seen and t.numel() else t
        seen.add(ptr)
    return out
