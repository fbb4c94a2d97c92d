"""Where a run is: the one progress type, from the pipeline's steps to the client's events.

Plain data with no heavy imports, so the engine, the HTTP schemas and the Python client share it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StepProgress:
    """Step `step` of `total` (1-based) in stage `stage`, the `stage_index`-th (0-based) of `stages`
    sampling stages. `stage` is a chain label such as "base 64" or "upsample 256"."""

    stage: str
    stage_index: int
    stages: int
    step: int
    total: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepProgress:
        """From a mapping holding (at least) the five fields, e.g. a progress event's JSON."""
        return cls(**{name: data[name] for name in FIELDS})


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(StepProgress))
