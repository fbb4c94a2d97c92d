"""Sampler behaviour that the reference runs do not pin down: noise sources, hooks, cancellation,
and the samplers the reference lacks (PLMS, DPM-Solver++(2M) and its SDE variant) against maths
whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glide_api.diffusion.guidance import classifier_free_guidance
from glide_api.diffusion.samplers import (
    LAMBDA_MIN,
    RecordedNoise,
    SeededNoise,
    X0Rule,
    ddim_step,
    dpm_solver_step,
    dynamic_threshold,
    sample,
    sample_to_end,
    sampling_schedule,
)
from glide_api.diffusion.schedule import Schedule, beta_schedule, half_log_snr, space_timesteps
from glide_api.options import SAMPLERS

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
        ({"sampler": "dpm++2m-sde", "eta": 0.5}, "ddim sampler only"),
        ({"sampler": "dpm++2m", "threshold": 1.5}, "threshold must be a percentile"),
    ],
)
def test_bad_sampler_settings_are_value_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        next(sample(toy_model, SCHEDULE, torch.zeros(1, 3, 8, 8), noise=SeededNoise([0]), **kwargs))


# ---- the samplers beside ancestral and DDIM ------------------------------------------------------

COSINE = np.cumprod(1 - beta_schedule("squaredcos_cap_v2", 1000))


def cosine_schedule(respacing: str, sampler: str) -> Schedule:
    return sampling_schedule(
        noise_schedule="squaredcos_cap_v2", diffusion_steps=1000, respacing=respacing, sampler=sampler
    )


def test_first_order_dpm_solver_equals_ddim_on_the_same_timesteps() -> None:
    schedule = SCHEDULE
    x_dpm = x_ddim = SeededNoise([0, 1])(torch.Size([2, 3, 8, 8]))
    unused = torch.zeros_like(x_dpm)
    for i in reversed(range(len(schedule))):
        t = schedule.original_timesteps(i, batch=2, device="cpu")
        x_dpm = dpm_solver_step(schedule, toy_model(x_dpm, t), x_dpm, i, unused).x_prev
        x_ddim = ddim_step(schedule, toy_model(x_ddim, t), x_ddim, i, unused).x_prev
        assert torch.allclose(x_dpm, x_ddim, atol=2e-6), i


# Gaussian data x0 ~ N(MU, S²) per pixel: the ideal denoiser and the probability-flow ODE's
# solution are closed forms, so a solver's error can be measured exactly.
MU, S = 0.2, 0.5


def gaussian_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    ac = torch.from_numpy(COSINE)[t].reshape(-1, 1, 1, 1)
    alpha, sigma = ac.sqrt(), (1 - ac).sqrt()
    x0 = MU + alpha * S**2 / (alpha**2 * S**2 + sigma**2) * (x.double() - alpha * MU)
    eps = (x.double() - alpha * x0) / sigma
    return torch.cat([eps, torch.zeros_like(eps)], dim=1).float()


def exact_ode_solution(x: torch.Tensor, t_from: int, t_to: int) -> torch.Tensor:
    """x_t = α_t·μ + √(α_t²s² + σ_t²)/√(α_s²s² + σ_s²)·(x_s - α_s·μ) for Gaussian data."""
    (a1, a2), (v1, v2) = np.sqrt(COSINE[[t_from, t_to]]), 1 - COSINE[[t_from, t_to]]
    return a2 * MU + math.sqrt(a2**2 * S**2 + v2) / math.sqrt(a1**2 * S**2 + v1) * (x.double() - a1 * MU)


def ode_error(sampler: str, steps: int) -> float:
    """Largest error at t = 0 (before the final jump to σ = 0) over the same log-SNR timesteps."""
    schedule = cosine_schedule(str(steps), "dpm++2m")
    x_T = SeededNoise([0])(torch.Size([1, 3, 8, 8]))
    run = list(
        sample(gaussian_model, schedule, x_T, noise=SeededNoise([1]), sampler=sampler, clip_denoised=False)
    )
    exact = exact_ode_solution(x_T, int(schedule.timesteps[-1]), 0)
    return (run[-2].x.double() - exact).abs().max().item()


@pytest.mark.parametrize(("sampler", "order"), [("ddim", 1), ("plms", 2), ("dpm++2m", 2)])
def test_ode_samplers_converge_to_the_exact_solution_at_their_order(sampler, order) -> None:
    coarse, fine = ode_error(sampler, 40), ode_error(sampler, 80)
    assert fine < coarse / 2 ** (order - 0.3)  # halving the step divides the error by 2^order
    assert fine < (0.06 if order == 1 else 0.002)


def test_second_order_dpm_solver_is_far_nearer_the_exact_solution_than_ddim() -> None:
    assert ode_error("dpm++2m", 15) < ode_error("ddim", 15) / 5


def test_a_plain_count_places_dpm_solver_steps_evenly_in_log_snr_above_the_clipping() -> None:
    schedule = cosine_schedule("15", "dpm++2m")
    assert len(schedule) == 15 and schedule.timesteps[0] == 0
    every = half_log_snr(COSINE)
    top = int(schedule.timesteps[-1])
    assert every[top] >= LAMBDA_MIN > every[top + 1]
    targets = np.linspace(every[0], every[top], 15)
    for t, target in zip(schedule.timesteps, targets, strict=True):  # the nearest integer timestep
        assert abs(every[t] - target) <= min(abs(every[t + d] - target) for d in (-1, 1) if 0 <= t + d <= top)
    assert np.allclose(schedule.lambdas, every[schedule.timesteps])  # the respaced tables agree


def test_many_log_snr_steps_stay_distinct_and_too_many_are_refused() -> None:
    assert list(cosine_schedule("996", "dpm++2m").timesteps) == list(range(996))
    with pytest.raises(ValueError, match="at most 996 steps"):
        cosine_schedule("997", "dpm++2m-sde")


@pytest.mark.parametrize("respacing", ["ddim25", "10,10,3,2,2", "fast27", ""])
def test_other_respacings_name_the_timesteps_every_sampler_takes(respacing) -> None:
    for sampler in SAMPLERS:
        assert list(cosine_schedule(respacing, sampler).timesteps) == space_timesteps(1000, respacing)


def test_plms_calls_the_model_once_more_on_its_first_step_only() -> None:
    calls = []

    def counting_model(x, t):
        calls.append(int(t[0]))
        return toy_model(x, t)

    x_T = SeededNoise([0])(torch.Size([1, 3, 8, 8]))
    steps = list(sample(counting_model, SCHEDULE, x_T, noise=SeededNoise([1]), sampler="plms"))
    kept = list(SCHEDULE.timesteps[::-1])
    assert len(steps) == len(SCHEDULE) and calls == [kept[0], kept[1], *kept[1:]]


def test_dpm_solver_sde_reproduces_a_seed_whatever_shares_the_batch_and_uses_its_noise() -> None:
    schedule = cosine_schedule("8", "dpm++2m-sde")

    def run(seeds, sampler="dpm++2m-sde"):
        noise = SeededNoise(seeds)
        x_T = noise(torch.Size([len(seeds), 3, 8, 8]))
        return sample_to_end(sample(toy_model, schedule, x_T, noise=noise, sampler=sampler))

    together = run([4, 5, 6])
    assert torch.equal(together[1], run([5])[0]) and torch.equal(run([5]), run([5]))
    assert not torch.allclose(run([5]), run([5], sampler="dpm++2m"), atol=1e-3)


def test_the_last_step_of_every_sampler_lands_on_the_finished_x0() -> None:
    def paint_left(x0: torch.Tensor) -> torch.Tensor:
        x0 = x0.clone()
        x0[..., :4] = 0.25
        return x0

    x_T = SeededNoise([0])(torch.Size([1, 3, 8, 8]))
    for sampler in SAMPLERS:
        out = sample_to_end(
            sample(
                toy_model,
                cosine_schedule("6", sampler),
                x_T,
                noise=SeededNoise([1]),
                sampler=sampler,
                denoised_fn=paint_left,
            )
        )
        assert torch.equal(out[..., :4], torch.full_like(out[..., :4], 0.25)), sampler
        assert out.abs().max() <= 1, sampler


def test_dynamic_thresholding_rescales_each_saturated_sample_and_leaves_the_others() -> None:
    calm = torch.linspace(-0.9, 0.9, 48).reshape(1, 3, 4, 4)
    loud = calm * 3
    out = dynamic_threshold(torch.cat([calm, loud]), 0.995)
    assert torch.equal(out[0], calm[0])
    s = torch.quantile(loud.abs().flatten(), 0.995)
    assert torch.allclose(out[1], loud[0].clamp(-s, s) / s) and out[1].abs().max() == 1


def test_dynamic_thresholding_does_not_rescale_inpaintings_known_pixels() -> None:
    known = torch.full((1, 3, 4, 4), 0.5)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1

    def keep(x0):
        return x0 * (1 - mask) + known * mask

    out = X0Rule(threshold=0.9, denoised_fn=keep)(torch.full((1, 3, 4, 4), 4.0))
    assert torch.equal(out[..., :2], known[..., :2]) and torch.equal(out[..., 2:], torch.ones(1, 3, 4, 2))
