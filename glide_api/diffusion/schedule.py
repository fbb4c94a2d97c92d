"""Noise schedules and respacing (SPEC §5.1, §5.2, §5.7).

Every table is computed in float64 and gathered as float32 at use, exactly as the reference does,
so sampling reproduces its numbers. A `Schedule` is the respaced schedule actually sampled: index
i = 0..K-1 runs over the kept timesteps, and `timesteps[i]` is the original (0..T-1) timestep the
network sees.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidParameter
from ..options import DIFFUSION_STEPS

BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")


def beta_schedule(name: str, num_steps: int) -> np.ndarray:
    """The training betas, float64 [num_steps]."""
    if num_steps <= 0:
        raise InvalidParameter(f"diffusion_steps must be positive, got {num_steps}")
    if name == "linear":
        scale = 1000 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    if name == "squaredcos_cap_v2":

        def alpha_bar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array(
            [
                min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), 0.999)
                for i in range(num_steps)
            ],
            dtype=np.float64,
        )
    raise InvalidParameter(f"unknown noise_schedule {name!r}; expected one of {', '.join(BETA_SCHEDULES)}")


def space_timesteps(num_steps: int, respacing: str) -> list[int]:
    """The original timesteps kept by a respacing string, ascending.

    Forms: "" (all steps), "N" or "c0,c1,..." (evenly spaced counts per equal section),
    "ddimN" (a fixed stride from 0), "fast27" (the GLIDE upsampler's 27-step recipe).
    Raises ValueError naming the rule when the string cannot respace `num_steps` steps.
    """
    spec = respacing.strip() if isinstance(respacing, str) else respacing
    if not isinstance(spec, str):
        raise InvalidParameter(f"respacing must be a string, got {type(respacing).__name__}")
    if spec == "":
        return list(range(num_steps))
    if spec == "fast27":
        kept = set(space_timesteps(num_steps, "10,10,3,2,2"))
        kept.discard(num_steps - 1)
        kept.add(num_steps - 3)
        return sorted(kept)
    if match := re.fullmatch(r"ddim(\d+)", spec):
        wanted = int(match.group(1))
        for stride in range(1, num_steps):
            if len(range(0, num_steps, stride)) == wanted:
                return list(range(0, num_steps, stride))
        raise InvalidParameter(
            f"respacing {respacing!r}: no integer stride gives exactly {wanted} of {num_steps} steps"
        )
    if not re.fullmatch(r"\d+(,\d+)*", spec):
        raise InvalidParameter(
            f'respacing {respacing!r} is not understood; use a step count such as "100", '
            f'section counts such as "10,10,3,2,2", "ddimN" or "fast27"'
        )
    counts = [int(c) for c in spec.split(",")]
    if any(c < 1 for c in counts):
        raise InvalidParameter(f"respacing {respacing!r}: every step count must be at least 1")
    if len(counts) > num_steps:
        raise InvalidParameter(f"respacing {respacing!r}: more sections than the {num_steps} steps")
    section_size, extra = divmod(num_steps, len(counts))
    kept: set[int] = set()
    start = 0
    for i, count in enumerate(counts):
        size = section_size + (1 if i < extra else 0)
        if size < count:
            raise InvalidParameter(
                f"respacing {respacing!r}: cannot take {count} steps from a section of {size} "
                f"(the schedule has {num_steps} steps)"
            )
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            kept.add(start + round(cur))  # Python round: half to even, as the reference
            cur += stride
        start += size
    return sorted(kept)


def half_log_snr(alphas_cumprod: np.ndarray) -> np.ndarray:
    """λ = log(α/σ) = ½·log(ᾱ/(1-ᾱ)), DPM-Solver's time variable (float64)."""
    return 0.5 * (np.log(alphas_cumprod) - np.log1p(-alphas_cumprod))


def log_snr_timesteps(noise_schedule: str, num_steps: int, count: int, *, lambda_min: float) -> list[int]:
    """`count` original timesteps, ascending, as evenly spaced in λ as integer timesteps allow,
    from λ(0) down to the last timestep whose λ is at least `lambda_min`.

    The clipping matters for the cosine schedule, whose last few timesteps fall from λ ≈ -5 to
    -9.9: a solver that spends its first steps there lands far from the ODE's solution.
    """
    lambdas = half_log_snr(np.cumprod(1.0 - beta_schedule(noise_schedule, num_steps)))
    top = int(np.count_nonzero(lambdas >= lambda_min)) - 1  # λ falls with t
    if count < 1:
        raise InvalidParameter(f"the step count must be at least 1 (got {count})")
    if count > top + 1:
        raise InvalidParameter(
            f"at most {top + 1} steps fit the {noise_schedule} schedule's timesteps with "
            f"λ ≥ {lambda_min} (got {count})"
        )
    targets = np.linspace(lambdas[top], lambdas[0], count)
    chosen: list[int] = []
    for k, target in enumerate(targets):  # from the noisiest end; strictly falling, room left
        nearest = int(np.argmin(np.abs(lambdas[: top + 1] - target)))
        upper = top if not chosen else chosen[-1] - 1
        chosen.append(min(max(nearest, count - 1 - k), upper))
    return chosen[::-1]


class Schedule:
    """A (respaced) diffusion schedule: float64 tables indexed by step i = 0..K-1 (SPEC §5.2).

    The kept timesteps come from `respacing` (SPEC §5.7), or are given as `timesteps`.
    """

    def __init__(
        self,
        *,
        noise_schedule: str,
        diffusion_steps: int = DIFFUSION_STEPS,
        respacing: str = "",
        timesteps: Sequence[int] | None = None,
    ) -> None:
        self.noise_schedule = noise_schedule
        self.diffusion_steps = diffusion_steps
        self.respacing = respacing
        base_alphas_cumprod = np.cumprod(1.0 - beta_schedule(noise_schedule, diffusion_steps))
        kept = space_timesteps(diffusion_steps, respacing) if timesteps is None else list(timesteps)
        if kept != sorted(set(kept)) or not 0 <= kept[0] <= kept[-1] < diffusion_steps:
            raise InvalidParameter(f"timesteps must ascend strictly within 0..{diffusion_steps - 1}")
        self.timesteps = np.array(kept, dtype=np.int64)

        # Respaced betas from the kept ᾱ values; deliberately not re-clipped (SPEC §5.7).
        betas, last = [], 1.0
        for t in kept:
            betas.append(1 - base_alphas_cumprod[t] / last)
            last = base_alphas_cumprod[t]
        self.betas = b = np.array(betas, dtype=np.float64)
        self.alphas_cumprod = ac = np.cumprod(1.0 - b)
        self.alphas_cumprod_prev = ac_prev = np.append(1.0, ac[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(ac)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - ac)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / ac - 1)
        posterior_variance = b * (1.0 - ac_prev) / (1.0 - ac)
        # β̃_0 = 0, so index 0 reuses β̃_1 before the log.
        self.posterior_log_variance_clipped = np.log(
            np.append(posterior_variance[1], posterior_variance[1:]) if len(b) > 1 else np.array([b[0]])
        )
        self.posterior_mean_coef1 = b * np.sqrt(ac_prev) / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - ac_prev) * np.sqrt(1.0 - b) / (1.0 - ac)
        self.log_betas = np.log(b)
        self.lambdas = half_log_snr(ac)

    def __len__(self) -> int:
        return len(self.timesteps)

    def __repr__(self) -> str:
        return (
            f"Schedule(noise_schedule={self.noise_schedule!r}, diffusion_steps="
            f"{self.diffusion_steps}, respacing={self.respacing!r}, steps={len(self)})"
        )

    def original_timesteps(self, i: int | Tensor, *, batch: int, device: torch.device | str) -> Tensor:
        """The network's timestep input for step i: int64 [batch] of original timesteps."""
        if isinstance(i, Tensor):
            return torch.from_numpy(self.timesteps).to(device)[i.to(device)]
        return torch.full((batch,), int(self.timesteps[i]), dtype=torch.int64, device=device)


def extract(table: np.ndarray, i: int | Tensor, like: Tensor) -> Tensor:
    """table[i] as float32, shaped to broadcast against `like` ([B] indices give [B, 1, 1, 1]).

    The float64 value is rounded to float32 once, as the reference's gather does.
    """
    if isinstance(i, Tensor):
        values = torch.from_numpy(table).to(like.device)[i.to(like.device)].float()
        return values.reshape(-1, *([1] * (like.ndim - 1)))
    return torch.tensor(table[i], dtype=torch.float32, device=like.device)


def q_sample(schedule: Schedule, x0: Tensor, i: Tensor, noise: Tensor) -> Tensor:
    """Diffuse x0 to step i: √ᾱ_i x0 + √(1-ᾱ_i) ε."""
    return (
        extract(schedule.sqrt_alphas_cumprod, i, x0) * x0
        + extract(schedule.sqrt_one_minus_alphas_cumprod, i, x0) * noise
    )


def first_steps(schedule: Schedule, steps: int) -> Schedule:
    """The schedule's first `steps` steps, i = 0..steps-1, with the tables' values unchanged: a
    sampling loop over it runs the last `steps` steps of the whole schedule (image-to-image starts
    there). Every per-step table is cut, whichever a sampler reads."""
    if not 1 <= steps <= len(schedule):
        raise InvalidParameter(f"steps: must be 1 to the schedule's {len(schedule)} steps (got {steps})")
    part = copy.copy(schedule)
    for name, value in vars(schedule).items():
        if isinstance(value, np.ndarray) and value.shape[:1] == (len(schedule),):
            setattr(part, name, value[:steps])
    return part
