"""The official files: registry names, where OpenAI publishes them, pinned hashes, presets.

This module is the one place that knows those names and URLs; `official_files` fetches them into
the cache and `resolve` turns a checkpoint name into a model. A mirror (`WeightsSource.base_url`)
holds the files under their plain names, so a folder of downloaded files behind any static web
server is a mirror.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from glide_api.errors import InvalidParameter

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_DOWNLOADS",
    "DOWNLOAD_GROUPS",
    "REGISTRY",
    "TOKENIZER_FILES",
    "RemoteFile",
    "download_names",
    "registry_entry",
]


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

    def download_url(self, base_url: str | None) -> str:
        """The URL to fetch from: ``<base_url>/<filename>`` from a mirror, else the official `url`."""
        return f"{base_url.rstrip('/')}/{self.filename}" if base_url else self.url


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


def registry_entry(name: str) -> RemoteFile:
    """The registry's entry for `name`; `InvalidParameter` (listing the names) if there is none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidParameter(f"unknown file name {name!r}; expected one of {', '.join(REGISTRY)}") from None


def download_names(requested: Iterable[str]) -> list[str]:
    """The registry names to download for `requested` names and `DOWNLOAD_GROUPS`, in order.

    The tokenizer files come first (small, and the official models need them), then the rest as
    requested, each once. Raises `InvalidParameter` for a name that is neither, listing the valid
    ones.
    """
    names = list(TOKENIZER_FILES)
    for name in requested:
        for member in DOWNLOAD_GROUPS.get(name, (name,)):
            if member not in REGISTRY:
                raise InvalidParameter(
                    f"unknown name {name!r}; expected one of {', '.join([*REGISTRY, *DOWNLOAD_GROUPS])}"
                )
            if member not in names:
                names.append(member)
    return names
