"""Sampling: the step maths (SPEC §5.3–5.5) and the loop, as a generator that yields every step.

A step is a pure function of (schedule, model output, x_t, step index, noise). Noise always comes
from outside (a `NoiseSource`), so a seed per sample, or recorded noise, reproduces a run exactly.
The loop yields after each step: progress, x̂₀ previews and cancellation need no callbacks in here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import InvalidParameter
from ..options import SAMPLER, SAMPLERS
from .schedule import Schedule, extract, log_snr_timesteps

# model_fn(x_t [B, 3, H, W], original timesteps int64 [B]) -> [B, 6, H, W]: ε and the variance value v.
ModelFn = Callable[[Tensor, Tensor], Tensor]
# Applied to the predicted x̂₀ before clipping (inpainting re-imposes the known pixels here).
DenoisedFn = Callable[[Tensor], Tensor]
Sampler = Literal[SAMPLERS]
# Samplers that place a plain step count ("15") evenly in λ = log(α/σ) rather than in t.
LOG_SNR_SAMPLERS = ("dpm++2m", "dpm++2m-sde")
# Where their placement stops at the noisy end: the cosine schedule's λ plunges to -9.9 over its
# last four timesteps. -5.1 is also about where the linear schedule ends (λ(999) = -5.06).
LAMBDA_MIN = -5.1
# Adams–Bashforth weights of the newest ε first, by order (PLMS).
_ADAMS_BASHFORTH = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


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
    eps: Tensor | None = None  # PLMS: this step's ε, which its next steps extrapolate from


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


@dataclass(frozen=True)
class X0Rule:
    """How every sampler finishes the model's x̂₀ before a step uses it: dynamic thresholding (if
    `threshold`), then `denoised_fn` (inpainting's known pixels, which thresholding must not
    rescale), then clipping to [-1, 1] (if `clip`)."""

    clip: bool = True
    threshold: float = 0.0  # Imagen's percentile of |x̂₀| per sample; 0: plain clipping
    denoised_fn: DenoisedFn | None = None

    def __call__(self, pred_x0: Tensor) -> Tensor:
        if self.clip and self.threshold:
            pred_x0 = dynamic_threshold(pred_x0, self.threshold)
        if self.denoised_fn is not None:
            pred_x0 = self.denoised_fn(pred_x0)
        return pred_x0.clamp(-1, 1) if self.clip else pred_x0


def dynamic_threshold(pred_x0: Tensor, percentile: float) -> Tensor:
    """Imagen's rule, per sample: s = the `percentile` quantile of |x̂₀| (at least 1); clip x̂₀ to
    [-s, s] and divide by s. Saturated pixels of a strongly guided x̂₀ are pulled in, not cut."""
    s = torch.quantile(pred_x0.abs().flatten(1).float(), percentile, dim=1).clamp(min=1.0)
    s = s.to(pred_x0.dtype).reshape(-1, *([1] * (pred_x0.ndim - 1)))
    return pred_x0.clamp(-s, s) / s


def _x0_from_eps(schedule: Schedule, x: Tensor, eps: Tensor, i: int) -> Tensor:
    return (
        extract(schedule.sqrt_recip_alphas_cumprod, i, x) * x
        - extract(schedule.sqrt_recipm1_alphas_cumprod, i, x) * eps
    )


def _eps_from_x0(schedule: Schedule, x: Tensor, pred_x0: Tensor, i: int) -> Tensor:
    return (extract(schedule.sqrt_recip_alphas_cumprod, i, x) * x - pred_x0) / extract(
        schedule.sqrt_recipm1_alphas_cumprod, i, x
    )


def denoise(
    schedule: Schedule, model_output: Tensor, x: Tensor, i: int, rule: X0Rule
) -> tuple[Tensor, Tensor]:
    """(x̂₀ finished by `rule`, the ε that x̂₀ implies): what the ODE samplers step with. They
    read only the model's ε; its variance channels are ignored."""
    pred_x0 = rule(_x0_from_eps(schedule, x, model_output[:, : x.shape[1]], i))
    return pred_x0, _eps_from_x0(schedule, x, pred_x0, i)


def predict(
    schedule: Schedule, model_output: Tensor, x: Tensor, i: int, *, rule: X0Rule = X0Rule()
) -> Prediction:
    """`p_mean_variance` with the learned-range variance (SPEC §5.3)."""
    channels = x.shape[1]
    eps, v = model_output[:, :channels], model_output[:, channels:]
    # v ∈ [-1, 1] interpolates the log-variance between β̃ (clipped) and β, unclamped.
    frac = (v + 1) / 2
    log_variance = frac * extract(schedule.log_betas, i, x) + (1 - frac) * extract(
        schedule.posterior_log_variance_clipped, i, x
    )
    pred_x0 = rule(_x0_from_eps(schedule, x, eps, i))
    mean = (
        extract(schedule.posterior_mean_coef1, i, x) * pred_x0
        + extract(schedule.posterior_mean_coef2, i, x) * x
    )
    return Prediction(mean=mean, log_variance=log_variance, pred_x0=pred_x0)


def ancestral_step(
    schedule: Schedule, model_output: Tensor, x: Tensor, i: int, noise: Tensor, *, rule: X0Rule = X0Rule()
) -> StepOutput:
    """One DDPM step: x_{t-1} = μ + 1[i≠0]·σ·n (SPEC §5.4)."""
    p = predict(schedule, model_output, x, i, rule=rule)
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
    rule: X0Rule = X0Rule(),
) -> StepOutput:
    """One DDIM step; ε is re-derived from the clipped x̂₀ (SPEC §5.5). eta = 0 is deterministic."""
    pred_x0, eps = denoise(schedule, model_output, x, i, rule)
    alpha_bar = extract(schedule.alphas_cumprod, i, x)
    alpha_bar_prev = extract(schedule.alphas_cumprod_prev, i, x)
    sigma = (
        eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
    )
    mean = pred_x0 * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
    x_prev = mean + (i != 0) * sigma * noise
    return StepOutput(x_prev=x_prev, pred_x0=pred_x0)


def plms_step(
    schedule: Schedule,
    model_output: Tensor,
    x: Tensor,
    i: int,
    *,
    history: Sequence[Tensor] = (),
    ahead: Tensor | None = None,
    rule: X0Rule = X0Rule(),
) -> StepOutput:
    """One pseudo linear multistep (PNDM) step: DDIM's transfer of x, moved by an extrapolated ε.

    ε' is the Adams–Bashforth combination of this step's ε and the `history` of earlier steps'
    (oldest first; fourth order once three are known). The first step has no history: given
    `ahead`, the ε at DDIM's estimate of x_{t-1}, it takes the mean of the two (the pseudo
    improved Euler start, one extra model evaluation); without it, a DDIM step. The last step, to
    σ = 0, is DDIM's too: the picture is the step's x̂₀, clipped, with inpainting's known pixels.
    """
    pred_x0, eps = denoise(schedule, model_output, x, i, rule)
    if i == 0:
        return StepOutput(x_prev=pred_x0, pred_x0=pred_x0, eps=eps)
    if ahead is not None:
        eps_prime = (eps + ahead) / 2
    else:
        recent = [eps, *reversed(history)][: len(_ADAMS_BASHFORTH)]
        eps_prime = sum(w * e for w, e in zip(_ADAMS_BASHFORTH[len(recent) - 1], recent, strict=True))
    # The x̂₀ that ε' implies is finished like the model's (and ε' re-derived, as DDIM does): at
    # the cosine schedule's t = 999, 1/α ≈ 20,000 would blow any extrapolation error up.
    moved_x0, eps_prime = denoise(schedule, eps_prime, x, i, rule)
    alpha_bar_prev = extract(schedule.alphas_cumprod_prev, i, x)
    x_prev = torch.sqrt(alpha_bar_prev) * moved_x0 + torch.sqrt(1 - alpha_bar_prev) * eps_prime
    return StepOutput(x_prev=x_prev, pred_x0=pred_x0, eps=eps)


def dpm_solver_step(
    schedule: Schedule,
    model_output: Tensor,
    x: Tensor,
    i: int,
    noise: Tensor,
    *,
    previous: Tensor | None = None,
    stochastic: bool = False,
    rule: X0Rule = X0Rule(),
) -> StepOutput:
    """One DPM-Solver++(2M) step in data prediction, from step i to i-1; step 0 lands on σ = 0.

    With α, σ, λ = log(α/σ) at s = i and t = i-1 and h = λ_t - λ_s, D the step's x̂₀:
    ODE  x_t = (σ_t/σ_s)·x_s + α_t·(1 - e^{-h})·D
    SDE  x_t = (σ_t/σ_s)·e^{-h}·x_s + α_t·(1 - e^{-2h})·D + σ_t·√(1 - e^{-2h})·n
    Second order (`previous`: the x̂₀ of step i+1) takes D = x̂₀ + (x̂₀ - previous)·h/(2·h_prev),
    the linear extrapolation in λ to the step's midpoint. The last step is first order: its λ_t is
    infinite and x_t is x̂₀ itself.
    """
    pred_x0, _ = denoise(schedule, model_output, x, i, rule)
    if i == 0:
        return StepOutput(x_prev=pred_x0, pred_x0=pred_x0)
    lam, ac = schedule.lambdas, schedule.alphas_cumprod
    h = float(lam[i - 1] - lam[i])
    alpha_t, sigma_t, sigma_s = math.sqrt(ac[i - 1]), math.sqrt(1 - ac[i - 1]), math.sqrt(1 - ac[i])
    d = pred_x0
    if previous is not None:
        d = pred_x0 + (pred_x0 - previous) * (h / (2 * float(lam[i] - lam[i + 1])))
    if stochastic:
        x_prev = (
            (sigma_t / sigma_s * math.exp(-h)) * x
            + (-alpha_t * math.expm1(-2 * h)) * d
            + (sigma_t * math.sqrt(-math.expm1(-2 * h))) * noise
        )
    else:
        x_prev = (sigma_t / sigma_s) * x + (-alpha_t * math.expm1(-h)) * d
    return StepOutput(x_prev=x_prev, pred_x0=pred_x0)


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


def sampling_schedule(*, noise_schedule: str, diffusion_steps: int, respacing: str, sampler: str) -> Schedule:
    """The steps `sampler` takes for a respacing string.

    A plain count ("15") is the number of steps; the DPM-Solver samplers place them evenly in λ
    (down to `LAMBDA_MIN`), the others evenly in t (SPEC §5.7). Any other form ("ddim25",
    "10,10,3,2,2", "fast27", "" for every step) names its timesteps, which every sampler takes as
    they are.
    """
    if sampler in LOG_SNR_SAMPLERS and re.fullmatch(r"\d+", respacing.strip()):
        timesteps = log_snr_timesteps(noise_schedule, diffusion_steps, int(respacing), lambda_min=LAMBDA_MIN)
        return Schedule(
            noise_schedule=noise_schedule,
            diffusion_steps=diffusion_steps,
            respacing=respacing,
            timesteps=timesteps,
        )
    return Schedule(noise_schedule=noise_schedule, diffusion_steps=diffusion_steps, respacing=respacing)


def model_evaluations(sampler: str, steps: int) -> int:
    """How many times `sample` calls the model over a schedule of `steps` steps."""
    return steps + int(sampler == "plms" and steps > 1)


def sample(
    model_fn: ModelFn,
    schedule: Schedule,
    x_T: Tensor,
    *,
    noise: NoiseSource,
    sampler: Sampler = SAMPLER.default,
    eta: float = 0.0,
    clip_denoised: bool = True,
    threshold: float = 0.0,
    denoised_fn: DenoisedFn | None = None,
) -> Iterator[SampleStep]:
    """Denoise x_T through every step of `schedule`, yielding after each one.

    Per step: call the model on the original timestep, then draw noise (always, even for the
    deterministic samplers, which keeps noise streams aligned with the reference), then step.
    PLMS calls the model once more on its first step. `threshold` is the dynamic-thresholding
    percentile (0: plain clipping). Stop iterating to cancel; the last yielded `x` is the sample.
    """
    if sampler not in SAMPLERS:
        raise InvalidParameter(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler != "ddim" and eta != 0.0:
        raise InvalidParameter("eta applies to the ddim sampler only")
    if not 0.0 <= eta <= 1.0:
        raise InvalidParameter(f"eta must be in [0, 1], got {eta}")
    if not 0.0 <= threshold <= 1.0:
        raise InvalidParameter(f"threshold must be a percentile in [0, 1] (0: off), got {threshold}")
    rule = X0Rule(clip=clip_denoised, threshold=threshold, denoised_fn=denoised_fn)
    x = x_T
    total = len(schedule)
    history: tuple[Tensor, ...] = ()  # PLMS: the last three ε; DPM-Solver: the last x̂₀
    for n, i in enumerate(reversed(range(total)), start=1):
        t = schedule.original_timesteps(i, batch=x.shape[0], device=x.device)
        with torch.no_grad():
            model_output = model_fn(x, t)
            step_noise = noise(x.shape)
            if sampler == "ancestral":
                out = ancestral_step(schedule, model_output, x, i, step_noise, rule=rule)
            elif sampler == "ddim":
                out = ddim_step(schedule, model_output, x, i, step_noise, eta=eta, rule=rule)
            elif sampler == "plms":
                ahead = None
                if not history and i > 0:
                    guess = plms_step(schedule, model_output, x, i, rule=rule).x_prev
                    t_next = schedule.original_timesteps(i - 1, batch=x.shape[0], device=x.device)
                    ahead = denoise(schedule, model_fn(guess, t_next), guess, i - 1, rule)[1]
                out = plms_step(schedule, model_output, x, i, history=history, ahead=ahead, rule=rule)
                history = (*history, out.eps)[-3:]
            else:
                out = dpm_solver_step(
                    schedule,
                    model_output,
                    x,
                    i,
                    step_noise,
                    previous=history[-1] if history else None,
                    stochastic=sampler == "dpm++2m-sde",
                    rule=rule,
                )
                history = (out.pred_x0,)
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
