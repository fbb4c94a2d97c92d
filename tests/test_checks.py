"""The shared argument checks and the error they raise."""

from __future__ import annotations

import pytest

from glide_api import checks
from glide_api.errors import GlideError, InvalidParameter


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None])
def test_integer_refuses_what_is_not_an_int_bools_included(value) -> None:
    with pytest.raises(InvalidParameter, match=r"^n: must be a positive integer \(got "):
        checks.integer("n", value, minimum=1)


def test_integer_names_the_range_it_wants() -> None:
    assert checks.integer("seed", 7, minimum=0, maximum=9) == 7
    with pytest.raises(InvalidParameter, match=r"^seed: must be an integer in \[0, 9\] \(got 10\)$"):
        checks.integer("seed", 10, minimum=0, maximum=9)
    with pytest.raises(InvalidParameter, match=r"^k: must be a non-negative integer"):
        checks.integer("k", -1, minimum=0)


@pytest.mark.parametrize("value", [True, float("nan"), float("inf"), "0.5"])
def test_number_refuses_bools_and_non_finite_values(value) -> None:
    with pytest.raises(InvalidParameter, match=r"^eta: must be a number in \[0, 1\]"):
        checks.number("eta", value, minimum=0.0, maximum=1.0)


def test_one_of_lists_the_choices() -> None:
    assert checks.one_of("sampler", "ddim", ("ancestral", "ddim")) == "ddim"
    with pytest.raises(InvalidParameter, match=r"^sampler: must be one of ancestral, ddim \(got 'euler'\)$"):
        checks.one_of("sampler", "euler", ("ancestral", "ddim"))


def test_an_invalid_parameter_is_a_value_error_of_the_package_that_knows_its_parameter() -> None:
    error = InvalidParameter("upsample_steps: at most 10 steps on this server (got 27)")
    assert isinstance(error, ValueError) and isinstance(error, GlideError)
    assert error.param == "upsample_steps"
    assert InvalidParameter("no parameter named here").param is None
