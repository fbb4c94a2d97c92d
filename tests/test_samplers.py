"""Sampler behaviour that the reference runs do not pin down: noise sources, hooks, cancellation."""

from __future__ import annotations

import pytest
import torch

from glide_api.diffusion.guidance import classifier_free_guidance
from glide_api.diffusion.samplers import (
    RecordedNoise,
    SeededNoise,
    ddim_step,
    sample,
    sample_to_end,
)
from glide_api.diffusion.schedule import Schedule

SCHEDULE = Schedule(noise_schedule="squaredcos_cap_v2", respacing="10")


def toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in network: ε and v depend on x and t, row by row."""
    scale = (t.float() / 1000)[:, None, None, None]
    return torch.cat([torch.tanh(x * 0.5 + scale), torch.tanh(x.flip(-1)) * 0.9], dim=1)


def test_seeded_noise_row_depends_only_on_its_own_seed() -> None:
    together = SeededNoise([7, 8, 9])(torch.Size([3, 3, 8, 8]))
    alone = SeededNoise([8])(torch.Size([1, 3, 8, 8]))
    assert torch.equal(together[1], alone[0])
    assert not torch.equal(together[0], together[2])


def test_a_seed_reproduces_its_sample_whatever_shares_the_batch() -> None:
    def run(seeds):
        noise = SeededNoise(seeds)
        x_T = noise(torch.Size([len(seeds), 3, 8, 8]))
        return sample_to_end(sample(toy_model, SCHEDULE, x_T, noise=noise))

    batch = run([1, 2, 3])
    assert torch.allclose(batch[1], run([2])[0], atol=1e-6)
    assert torch.equal(run([5]), run([5]))


def test_ddim_with_eta_zero_ignores_the_step_noise() -> None:
    x_T = SeededNoise([0])(torch.Size([1, 3, 8, 8]))
    a = sample_to_end(sample(toy_model, SCHEDULE, x_T, noise=SeededNoise([1]), sampler="ddim"))
    b = sample_to_end(sample(toy_model, SCHEDULE, x_T, noise=SeededNoise([2]), sampler="ddim"))
    assert torch.equal(a, b)


def test_ddim_with_positive_eta_uses_the_step_noise() -> None:
    x_T = SeededNoise([0])(torch.Size([1, 3, 8, 8]))
    a = sample_to_end(sample(toy_model, SCHEDULE, x_T, noise=SeededNoise([1]), sampler="ddim", eta=1.0))
    b = sample_to_end(sample(toy_model, SCHEDULE, x_T, noise=SeededNoise([2]), sampler="ddim", eta=1.0))
    assert not torch.allclose(a, b)


def test_ddim_eta_one_has_the_posterior_variance() -> None:
    # With eta = 1, DDIM's σ² equals β̃ (the DDPM posterior variance).
    i = 5
    x = torch.zeros(1, 3, 2, 2)
    out = torch.zeros(1, 6, 2, 2)
    noise = torch.ones_like(x)
    x_prev = ddim_step(SCHEDULE, out, x, i, noise, eta=1.0).x_prev
    x_prev_no_noise = ddim_step(SCHEDULE, out, x, i, torch.zeros_like(x), eta=1.0).x_prev
    ac, ac_prev, b = SCHEDULE.alphas_cumprod[i], SCHEDULE.alphas_cumprod_prev[i], SCHEDULE.betas[i]
    posterior_std = (b * (1 - ac_prev) / (1 - ac)) ** 0.5
    assert torch.allclose(x_prev - x_prev_no_noise, torch.full_like(x, posterior_std), rtol=1e-5)


def test_denoised_fn_runs_before_clipping_on_every_step() -> None:
    seen = []

    def keep_left_half(x0: torch.Tensor) -> torch.Tensor:
        seen.append(x0.abs().max().item())
        x0 = x0.clone()
        x0[..., :4] = 5.0  # outside [-1, 1]: must be clipped afterwards
        return x0

    x_T = SeededNoise([0])(torch.Size([1, 3, 8, 8]))
    steps = list(sample(toy_model, SCHEDULE, x_T, noise=SeededNoise([1]), denoised_fn=keep_left_half))
    assert len(seen) == len(SCHEDULE)
    assert all(torch.all(s.pred_x0[..., :4] == 1.0) for s in steps)


def test_stopping_the_loop_stops_calling_the_model() -> None:
    calls = []

    def counting_model(x, t):
        calls.append(int(t[0]))
        return toy_model(x, t)

    x_T = SeededNoise([0])(torch.Size([1, 3, 8, 8]))
    for step in sample(counting_model, SCHEDULE, x_T, noise=SeededNoise([1])):
        if step.step == 3:
            break
    assert len(calls) == 3


def test_guidance_scale_one_equals_the_conditional_model() -> None:
    def paired(x, t):  # first half "conditional", second half "unconditional"
        out = toy_model(x, t)
        return torch.cat([out[: len(x) // 2], out[len(x) // 2 :] * 0.5])

    x = torch.randn(2, 3, 4, 4)
    t = torch.tensor([10, 10])
    guided = classifier_free_guidance(paired, [1.0, 1.0])(x, t)
    assert torch.allclose(guided, toy_model(x, t), atol=1e-6)


def test_guidance_scale_is_per_sample() -> None:
    def paired(x, t):
        out = toy_model(x, t)
        return torch.cat([out[: len(x) // 2], out[len(x) // 2 :] * 0.5])

    x = torch.randn(2, 3, 4, 4)
    t = torch.tensor([10, 10])
    mixed = classifier_free_guidance(paired, [1.0, 3.0])(x, t)
    alone = classifier_free_guidance(paired, [3.0])(x[1:], t[1:])
    assert torch.allclose(mixed[1], alone[0], atol=1e-6)
    assert torch.allclose(mixed[0], toy_model(x, t)[0], atol=1e-6)


def test_recorded_noise_must_fit_the_batch_and_the_steps() -> None:
    noise = RecordedNoise([torch.zeros(1, 3, 8, 8)])
    with pytest.raises(ValueError, match="expected"):
        noise(torch.Size([2, 3, 8, 8]))
    with pytest.raises(ValueError, match="exhausted"):
        noise(torch.Size([1, 3, 8, 8]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampler": "euler"}, "sampler must be one of"),
        ({"sampler": "ancestral", "eta": 0.5}, "ddim sampler only"),
        ({"sampler": "ddim", "eta": 2.0}, "eta must be in"),
    ],
)
def test_bad_sampler_settings_are_value_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        next(sample(toy_model, SCHEDULE, torch.zeros(1, 3, 8, 8), noise=SeededNoise([0]), **kwargs))
