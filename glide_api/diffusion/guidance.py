"""Classifier-free guidance as the GLIDE notebooks do it (SPEC §6.1), with a scale per sample."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import InvalidParameter
from .samplers import ModelFn


def classifier_free_guidance(
    paired_model_fn: Callable[[Tensor, Tensor], Tensor],
    guidance_scales: Sequence[float] | Tensor,
) -> ModelFn:
    """Wrap a model run on 2B rows (B prompts, then B empty prompts) into a guided B-row model.

    The B-row state x is fed twice; ε = ε_uncond + s·(ε_cond − ε_uncond) per sample, and the
    variance channels are the conditional rows' own, as in the reference. Running the state at B
    rows (the reference carries an unused second half) gives the same first B rows.
    """
    scales = torch.as_tensor(guidance_scales, dtype=torch.float32).reshape(-1, 1, 1, 1)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        b, channels = x.shape[0], x.shape[1]
        if scales.shape[0] != b:
            raise InvalidParameter(f"{scales.shape[0]} guidance scales for a batch of {b}")
        out = paired_model_fn(torch.cat([x, x]), torch.cat([t, t]))
        eps, rest = out[:, :channels], out[:, channels:]
        cond, uncond = eps[:b], eps[b:]
        guided_eps = uncond + scales.to(x.device) * (cond - uncond)
        return torch.cat([guided_eps, rest[:b]], dim=1)

    return guided
