"""The GLIDE training objective: ε-prediction MSE plus the variational bound for the variance.

The "hybrid" loss of improved DDPM (Nichol & Dhariwal 2021), which GLIDE trains with:

    L = ‖ε − ε_θ(x_t, t)‖² / (C·H·W)  +  λ·T·L_t,        λ = 0.001, T = 1000 (so λ·T = 1)

with t uniform over the T training steps. L_t is one term of the variational bound in bits per
dimension: KL(q(x_{t−1} | x_t, x₀) ‖ p_θ(x_{t−1} | x_t)) for t > 0 and the discretised Gaussian
decoder's −log p_θ(x₀ | x₁) at t = 0. In L_t the mean comes from a *detached* ε_θ, so the bound only
trains the variance value v (SPEC §5.3) and the MSE alone trains ε. The schedule tables are the
float64 ones of `Schedule` (gathered as float32, as at sampling), over the full, unrespaced schedule.

`mse_weights` gives each step's weight of the MSE under a named weighting (GLIDE's own recipe is
"eps": no weighting); `hybrid_loss` takes that table. With SNR(t) = ᾱ_t / (1 − ᾱ_t), an ε error
is an x₀ error times √SNR, so the plain ε-MSE cares least about the noisiest steps, where a
picture's layout is decided:

- "p2": 1 / (1 + SNR), the perception-prioritised weighting of Choi et al. 2022 (γ = 1, k = 1):
  the least noisy steps, which only remove the last traces of noise, count less.
- "truncated-snr": max(1, 1 / SNR), after Salimans & Ho 2022: an x₀-MSE wherever SNR < 1, the
  ε-MSE elsewhere, so the layout steps are trained as hard as the rest. The weight stops at 100
  (SNR 0.01; the last ~6% of a cosine schedule): nearer pure noise an ε-predicting network would
  need ε to a precision it cannot reach (at t = T − 1, SNR is ~1e-5) and those few steps would
  take the whole gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..diffusion.samplers import X0Rule, predict
from ..diffusion.schedule import Schedule, extract
from ..errors import InvalidParameter
from .settings import MSE_WEIGHTINGS

VB_LAMBDA = 0.001  # improved DDPM's λ for the variational-bound term
TRUNCATED_SNR_MAX_WEIGHT = 100.0  # see the module docstring
_LOG2 = math.log(2.0)


@dataclass(frozen=True)
class LossTerms:
    """Per-sample terms, each [B]; `loss` is what is minimised (average it over the batch)."""

    loss: Tensor
    mse: Tensor
    vb: Tensor  # L_t in bits per dimension (unweighted)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def discretized_gaussian_log_likelihood(x: Tensor, *, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x) per element for 8-bit data x ∈ [-1, 1] under N(mean, e^(2·log_scale)), in nats.

    Each of the 256 levels owns a bin of width 2/255 around it; the two end bins reach to ±∞.
    """
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    upper = inv_std * (centred + 1.0 / 255.0)
    lower = inv_std * (centred - 1.0 / 255.0)
    log_cdf_upper = torch.special.log_ndtr(upper)  # log P(X ≤ upper edge)
    log_sf_lower = torch.special.log_ndtr(-lower)  # log P(X > lower edge)
    mass = torch.special.ndtr(upper) - torch.special.ndtr(lower)
    log_mass = torch.log(mass.clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_mass))


def q_posterior(schedule: Schedule, x0: Tensor, x_t: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (clipped) log-variance of q(x_{t−1} | x_t, x₀) (SPEC §5.2)."""
    mean = (
        extract(schedule.posterior_mean_coef1, i, x_t) * x0
        + extract(schedule.posterior_mean_coef2, i, x_t) * x_t
    )
    return mean, extract(schedule.posterior_log_variance_clipped, i, x_t)


def mse_weights(schedule: Schedule, weighting: str) -> np.ndarray:
    """The weight of each step's ε-MSE under `weighting` (float64; see the module docstring)."""
    snr = schedule.alphas_cumprod / (1.0 - schedule.alphas_cumprod)
    if weighting == "eps":
        return np.ones_like(snr)
    if weighting == "p2":
        return 1.0 / (1.0 + snr)
    if weighting == "truncated-snr":
        return np.clip(1.0 / snr, 1.0, TRUNCATED_SNR_MAX_WEIGHT)
    raise InvalidParameter(f"mse_weighting: must be one of {', '.join(MSE_WEIGHTINGS)} (got {weighting!r})")


def hybrid_loss(
    schedule: Schedule,
    model_output: Tensor,
    *,
    x0: Tensor,
    x_t: Tensor,
    noise: Tensor,
    t: Tensor,
    vb_lambda: float = VB_LAMBDA,
    mse_weight: np.ndarray | None = None,
) -> LossTerms:
    """The loss for a batch diffused to steps `t` [B] with `noise`: see the module docstring.

    `mse_weight` is a table from `mse_weights` (computed once per run); None is GLIDE's plain MSE.

    `model_output` is the network's [B, 2C, H, W] (ε, v); computed in float32 whatever it came in.
    """
    if len(schedule) != schedule.diffusion_steps:
        raise InvalidParameter("the training loss needs the full schedule (no respacing)")
    out = model_output.float()
    channels = x0.shape[1]
    eps, v = out[:, :channels], out[:, channels:]
    mse = ((noise - eps) ** 2).mean(dim=(1, 2, 3))

    # The bound with ε frozen: gradients reach the variance value v only.
    frozen = torch.cat([eps.detach(), v], dim=1)
    p = predict(schedule, frozen, x_t, t, rule=X0Rule(clip=False))
    true_mean, true_log_variance = q_posterior(schedule, x0, x_t, t)
    kl = normal_kl(true_mean, true_log_variance, p.mean, p.log_variance).mean(dim=(1, 2, 3)) / _LOG2
    nll = -discretized_gaussian_log_likelihood(x0, mean=p.mean, log_scale=0.5 * p.log_variance)
    nll = nll.mean(dim=(1, 2, 3)) / _LOG2
    vb = torch.where(t == 0, nll, kl)
    weighted = mse if mse_weight is None else mse * extract(mse_weight, t, mse)
    return LossTerms(loss=weighted + vb_lambda * schedule.diffusion_steps * vb, mse=mse, vb=vb)
