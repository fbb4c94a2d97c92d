"""Which stages make each output size, from the models' own sizes.

For the official pair, base b = 64 and upsampler u = 256:

| size | chain |
|---|---|
| b | the base model alone |
| u | base, then one 4x upsampler pass (the reference recipe) |
| b < s < u (128) | base, upsampler to u, then a Lanczos downscale to s (sharper than upscaling b) |
| 2u, 4u (512, 1024) | base, upsampler to u, then the upsampler again at 2x per doubling (text only) |

The 2x passes, as the original Glide-Api did, condition the upsampler on the previous 8-bit image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Stage:
    kind: Literal["base", "upsample", "upsample-2x", "lanczos"]
    size: int

    @property
    def label(self) -> str:
        return f"{self.kind} {self.size}"

    @property
    def samples(self) -> bool:
        """Whether this stage runs a sampling loop (the Lanczos resize does not)."""
        return self.kind != "lanczos"


def output_sizes(*, base: int, upsample: int | None, chained: bool) -> list[int]:
    """Every size a base model of `base` px and an upsampler of `upsample` px (None: none) make;
    `chained`: the upsampler may run again at 2x per doubling (text-to-image only)."""
    if upsample is None:
        return [base]
    between = [base * 2**k for k in range(1, 16) if base * 2**k < upsample]
    beyond = [upsample * 2, upsample * 4] if chained else []
    return sorted({base, *between, upsample, *beyond})


def plan_stages(size: int, *, base: int, upsample: int | None) -> list[Stage]:
    """The stages that make `size` (one of `output_sizes`)."""
    if size == base or upsample is None:
        return [Stage("base", base)]
    stages = [Stage("base", base), Stage("upsample", upsample)]
    if size < upsample:
        stages.append(Stage("lanczos", size))
    current = upsample
    while current < size:
        current *= 2
        stages.append(Stage("upsample-2x", current))
    return stages
