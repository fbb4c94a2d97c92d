"""Classifier-free guidance as the GLIDE notebooks do it (SPEC §6.1), with a scale per sample, and
optionally only on a part of the schedule (a guidance interval per sample)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import InvalidParameter
from .samplers import ModelFn

# paired_model_fn(x, t, rows) -> output of those rows of the 2B-row layout (i < B: sample i with its
# prompt, B + i: with its negative prompt); x and t hold exactly those rows, in that order.
RowsModelFn = Callable[[Tensor, Tensor, Sequence[int]], Tensor]


def classifier_free_guidance(
    paired_model_fn: Callable[[Tensor, Tensor], Tensor] | RowsModelFn,
    guidance_scales: Sequence[float] | Tensor,
    *,
    intervals: Sequence[tuple[float, float]] | None = None,
    diffusion_steps: int | None = None,
) -> ModelFn:
    """Wrap a model run on 2B rows (B prompts, then B empty or negative prompts) into a guided B-row
    model.

    The B-row state x is fed twice; ε = ε_uncond + s·(ε_cond − ε_uncond) per sample, and the
    variance channels are the conditional rows' own, as in the reference. Running the state at B
    rows (the reference carries an unused second half) gives the same first B rows.

    `intervals` (lo, hi) per sample: guidance applies where lo ≤ t/T ≤ hi (t the original timestep,
    T = `diffusion_steps`); elsewhere the sample's output is its conditional row alone, and its
    second row is not computed. With intervals, `paired_model_fn` takes the rows it is to compute
    (`RowsModelFn`); at a step where every sample is guided, those are all 2B rows, the same call as
    without intervals.
    """
    scales = torch.as_tensor(guidance_scales, dtype=torch.float32).reshape(-1, 1, 1, 1)
    if intervals is not None:
        if diffusion_steps is None:
            raise InvalidParameter("diffusion_steps: needed to place the guidance intervals")
        if len(intervals) != scales.shape[0]:
            raise InvalidParameter(f"{len(intervals)} guidance intervals for {scales.shape[0]} scales")

    def guided(x: Tensor, t: Tensor) -> Tensor:
        b, channels = x.shape[0], x.shape[1]
        if scales.shape[0] != b:
            raise InvalidParameter(f"{scales.shape[0]} guidance scales for a batch of {b}")
        if intervals is None:
            out = paired_model_fn(torch.cat([x, x]), torch.cat([t, t]))
            return _combine(out, scales.to(x.device), b, channels)
        level = [step / diffusion_steps for step in t.tolist()]
        on = [i for i, (lo, hi) in enumerate(intervals) if lo <= level[i] <= hi]
        rows = [*range(b), *(b + i for i in on)]
        out = paired_model_fn(torch.cat([x, x[on]]), torch.cat([t, t[on]]), rows)
        if len(on) == b:
            return _combine(out, scales.to(x.device), b, channels)
        result = out[:b].clone()
        if on:
            result[on] = _combine(torch.cat([out[on], out[b:]]), scales[on].to(x.device), len(on), channels)
        return result

    return guided


def _combine(out: Tensor, scales: Tensor, b: int, channels: int) -> Tensor:
    """The guided B rows from 2B rows of output: ε per `scales`, the conditional rows' variance."""
    eps, rest = out[:, :channels], out[:, channels:]
    cond, uncond = eps[:b], eps[b:]
    guided_eps = uncond + scales * (cond - uncond)
    return torch.cat([guided_eps, rest[:b]], dim=1)
