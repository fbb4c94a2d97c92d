"""Beta schedules and respacing against the reference tables (SPEC §5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from golden import golden_json, tensors

from glide_api.diffusion.schedule import Schedule, beta_schedule, space_timesteps


@pytest.mark.parametrize("name", ["linear", "squaredcos_cap_v2"])
def test_beta_schedules_match_reference_exactly(name) -> None:
    ref = tensors("beta-schedules.safetensors")[f"betas_{name}"].numpy()
    assert np.array_equal(beta_schedule(name, 1000), ref)


def test_every_respacing_string_keeps_the_reference_timesteps() -> None:
    for spec, expected in golden_json()["respacing"].items():
        assert space_timesteps(1000, spec) == expected, spec


def test_fast27_swaps_999_for_997() -> None:
    kept = space_timesteps(1000, "fast27")
    assert len(kept) == 27 and kept[-1] == 997 and 999 not in kept
    assert space_timesteps(1000, "10,10,3,2,2")[-1] == 999


def test_ddim_respacing_uses_a_fixed_stride_from_zero() -> None:
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))


# The spec prints its check values to 10 decimals: compare to that precision.
def test_cosine_100_schedule_matches_spec_check_values() -> None:
    s = Schedule(noise_schedule="squaredcos_cap_v2", respacing="100")
    assert s.betas.dtype == np.float64
    np.testing.assert_allclose(
        s.betas[:3], [4.1284224822e-05, 6.7984006851e-04, 1.1655155529e-03], rtol=0, atol=5e-11
    )
    np.testing.assert_allclose(s.betas[-1], 0.9999899992, rtol=0, atol=5e-11)
    np.testing.assert_allclose(s.alphas_cumprod[-1], 2.42876690702e-09, rtol=1e-10)


def test_linear_fast27_schedule_matches_spec_check_values() -> None:
    s = Schedule(noise_schedule="linear", respacing="fast27")
    np.testing.assert_allclose(s.betas[:3], [1.0e-04, 7.2149533746e-03, 1.6745839973e-02], rtol=0, atol=5e-11)
    np.testing.assert_allclose(s.betas[-3:], [0.9400766593, 0.0160359359, 0.972125411], rtol=0, atol=5e-11)


def test_posterior_log_variance_reuses_index_one_at_index_zero() -> None:
    s = Schedule(noise_schedule="linear", respacing="50")
    assert s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1]


def test_network_sees_original_timesteps() -> None:
    s = Schedule(noise_schedule="squaredcos_cap_v2", respacing="fast27")
    t = s.original_timesteps(26, batch=3, device="cpu")
    assert t.dtype == torch.int64 and t.tolist() == [997, 997, 997]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("2000", "cannot take 2000 steps"),
        ("ddim999", "no integer stride"),
        ("fast", "not understood"),
        ("10,,3", "not understood"),
        ("0", "at least 1"),
        ("-5", "not understood"),
    ],
)
def test_impossible_respacing_is_a_value_error_naming_it(spec, message) -> None:
    with pytest.raises(ValueError, match=message):
        space_timesteps(1000, spec)


def test_unknown_noise_schedule_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown noise_schedule 'cosine'"):
        beta_schedule("cosine", 1000)
