"""Sampling: the step maths (SPEC §5.3–5.5) and the loop, as a generator that yields every step.

A step is a pure function of (schedule, model output, x_t, step index, noise). Noise always comes
from outside (a `NoiseSource`), so a seed per sample, or recorded noise, reproduces a run exactly.
The loop yields after each step: progress, x̂₀ previews and cancellation need no callbacks in here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import InvalidParameter
from ..options import SAMPLER, SAMPLERS
from .schedule import Schedule, extract

# model_fn(x_t [B, 3, H, W], original timesteps int64 [B]) -> [B, 6, H, W]: ε and the variance value v.
ModelFn = Callable[[Tensor, Tensor], Tensor]
# Applied to the predicted x̂₀ before clipping (inpainting re-imposes the known pixels here).
DenoisedFn = Callable[[Tensor], Tensor]
Sampler = Literal[SAMPLERS]


@dataclass(frozen=True)
class Prediction:
    """The model's view of p(x_{t-1} | x_t): posterior mean and log-variance, and x̂₀."""

    mean: Tensor
    log_variance: Tensor
    pred_x0: Tensor


@dataclass(frozen=True)
class StepOutput:
    x_prev: Tensor
    pred_x0: Tensor


@dataclass(frozen=True)
class SampleStep:
    """What the loop yields after each step."""

    step: int  # 1-based count of steps done
    total: int
    timestep: int  # the original timestep just denoised
    x: Tensor  # x_{t-1}; after the last step, the sample
    pred_x0: Tensor  # the model's current estimate of the final image

    @property
    def is_last(self) -> bool:
        return self.step == self.total


def predict(
    schedule: Schedule,
    model_output: Tensor,
    x: Tensor,
    i: int,
    *,
    clip_denoised: bool = True,
    denoised_fn: DenoisedFn | None = None,
) -> Prediction:
    """`p_mean_variance` with the learned-range variance (SPEC §5.3)."""
    channels = x.shape[1]
    eps, v = model_output[:, :channels], model_output[:, channels:]
    # v ∈ [-1, 1] interpolates the log-variance between β̃ (clipped) and β, unclamped.
    frac = (v + 1) / 2
    log_variance = frac * extract(schedule.log_betas, i, x) + (1 - frac) * extract(
        schedule.posterior_log_variance_clipped, i, x
    )
    pred_x0 = (
        extract(schedule.sqrt_recip_alphas_cumprod, i, x) * x
        - extract(schedule.sqrt_recipm1_alphas_cumprod, i, x) * eps
    )
    if denoised_fn is not None:
        pred_x0 = denoised_fn(pred_x0)
    if clip_denoised:
        pred_x0 = pred_x0.clamp(-1, 1)
    mean = (
        extract(schedule.posterior_mean_coef1, i, x) * pred_x0
        + extract(schedule.posterior_mean_coef2, i, x) * x
    )
    return Prediction(mean=mean, log_variance=log_variance, pred_x0=pred_x0)


def ancestral_step(
    schedule: Schedule,
    model_output: Tensor,
    x: Tensor,
    i: int,
    noise: Tensor,
    *,
    clip_denoised: bool = True,
    denoised_fn: DenoisedFn | None = None,
) -> StepOutput:
    """One DDPM step: x_{t-1} = μ + 1[i≠0]·σ·n (SPEC §5.4)."""
    p = predict(schedule, model_output, x, i, clip_denoised=clip_denoised, denoised_fn=denoised_fn)
    x_prev = p.mean + (i != 0) * torch.exp(0.5 * p.log_variance) * noise
    return StepOutput(x_prev=x_prev, pred_x0=p.pred_x0)


def ddim_step(
    schedule: Schedule,
    model_output: Tensor,
    x: Tensor,
    i: int,
    noise: Tensor,
    *,
    eta: float = 0.0,
    clip_denoised: bool = True,
    denoised_fn: DenoisedFn | None = None,
) -> StepOutput:
    """One DDIM step; ε is re-derived from the clipped x̂₀ (SPEC §5.5). eta = 0 is deterministic."""
    p = predict(schedule, model_output, x, i, clip_denoised=clip_denoised, denoised_fn=denoised_fn)
    eps = (extract(schedule.sqrt_recip_alphas_cumprod, i, x) * x - p.pred_x0) / extract(
        schedule.sqrt_recipm1_alphas_cumprod, i, x
    )
    alpha_bar = extract(schedule.alphas_cumprod, i, x)
    alpha_bar_prev = extract(schedule.alphas_cumprod_prev, i, x)
    sigma = (
        eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
    )
    mean = p.pred_x0 * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
    x_prev = mean + (i != 0) * sigma * noise
    return StepOutput(x_prev=x_prev, pred_x0=p.pred_x0)


# ---- noise ------------------------------------------------------------------------------------

NoiseSource = Callable[[torch.Size], Tensor]
"""Called with x's shape for the start noise and once per step, in order; returns unit Gaussian noise."""


class SeededNoise:
    """Noise from one `torch.Generator` per sample, so a seed reproduces its sample whatever else
    shares the batch. Drawn on the CPU (identical on every device), then moved to `device`."""

    def __init__(self, seeds: Sequence[int], *, device: torch.device | str = "cpu") -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.device = torch.device(device)

    def __call__(self, shape: torch.Size) -> Tensor:
        if shape[0] != len(self.generators):
            raise InvalidParameter(f"noise for {shape[0]} samples asked of {len(self.generators)} seeds")
        rows = [torch.randn(tuple(shape[1:]), generator=g) for g in self.generators]
        return torch.stack(rows).to(self.device)


class RecordedNoise:
    """Replays given noise tensors in order (to reproduce a reference run exactly)."""

    def __init__(self, tensors: Iterable[Tensor]) -> None:
        self._tensors = iter(tensors)

    def __call__(self, shape: torch.Size) -> Tensor:
        try:
            n = next(self._tensors)
        except StopIteration:
            raise InvalidParameter("recorded noise exhausted: fewer tensors than sampling steps") from None
        if n.shape != shape:
            raise InvalidParameter(f"recorded noise has shape {list(n.shape)}, expected {list(shape)}")
        return n


# ---- the loop ---------------------------------------------------------------------------------


def sample(
    model_fn: ModelFn,
    schedule: Schedule,
    x_T: Tensor,
    *,
    noise: NoiseSource,
    sampler: Sampler = SAMPLER.default,
    eta: float = 0.0,
    clip_denoised: bool = True,
    denoised_fn: DenoisedFn | None = None,
) -> Iterator[SampleStep]:
    """Denoise x_T through every step of `schedule`, yielding after each one.

    Per step: call the model on the original timestep, then draw noise (always, even for DDIM with
    eta = 0, which keeps noise streams aligned with the reference), then step. Stop iterating to
    cancel; the last yielded `x` is the sample.
    """
    if sampler not in SAMPLERS:
        raise InvalidParameter(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler == "ancestral" and eta != 0.0:
        raise InvalidParameter("eta applies to the ddim sampler only")
    if not 0.0 <= eta <= 1.0:
        raise InvalidParameter(f"eta must be in [0, 1], got {eta}")
    x = x_T
    total = len(schedule)
    for n, i in enumerate(reversed(range(total)), start=1):
        t = schedule.original_timesteps(i, batch=x.shape[0], device=x.device)
        with torch.no_grad():
            model_output = model_fn(x, t)
            step_noise = noise(x.shape)
            if sampler == "ddim":
                out = ddim_step(
                    schedule,
                    model_output,
                    x,
                    i,
                    step_noise,
                    eta=eta,
                    clip_denoised=clip_denoised,
                    denoised_fn=denoised_fn,
                )
            else:
                out = ancestral_step(
                    schedule,
                    model_output,
                    x,
                    i,
                    step_noise,
                    clip_denoised=clip_denoised,
                    denoised_fn=denoised_fn,
                )
        x = out.x_prev
        yield SampleStep(step=n, total=total, timestep=int(schedule.timesteps[i]), x=x, pred_x0=out.pred_x0)


def sample_to_end(steps: Iterable[SampleStep]) -> Tensor:
    """Run a sampling loop to completion and return the sample."""
    last = None
    for last in steps:  # noqa: B007
        pass
    if last is None:
        raise InvalidParameter("the schedule has no steps")
    return last.x
