"""The server's request builder: its limits, then the step defaults an operator (or the original step
routes) set, then the generation options' own defaults."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from glide_api.config import ServiceConfig
from glide_api.options import GENERATION_OPTIONS, GUIDANCE_SCALE, UPSAMPLE_TEMP
from glide_api.server.generation_request import StepDefaults, build_request
from glide_api.server.schemas import GlideOptions


def fake_service(**config) -> SimpleNamespace:
    c = ServiceConfig(**config)
    pipeline = SimpleNamespace(default_size=lambda task: 256, validate=lambda settings: None)
    engine = SimpleNamespace(pipeline=pipeline)
    return SimpleNamespace(
        config=c,
        engine=engine,
        engine_for=lambda task: engine,
        step_defaults=StepDefaults(base=c.base_steps, upsample=c.upsample_steps),
    )


def build(service, **options):
    return build_request(service, prompt="x", size=None, n=1, options=GlideOptions(**options))


def test_changing_the_step_defaults_applies_only_to_requests_built_afterwards() -> None:
    service = fake_service()
    before = build(service)
    service.step_defaults.set("base", "50")
    service.step_defaults.set("upsample", "ddim25")
    after = build(service)
    assert (before.settings.base_respacing, before.settings.upsample_respacing) == ("100", "fast27")
    assert (after.settings.base_respacing, after.settings.upsample_respacing) == ("50", "ddim25")
    assert service.step_defaults.get() == {"base": "50", "upsample": "ddim25"}


def test_invalid_step_defaults_are_refused_and_change_nothing() -> None:
    service = fake_service()
    with pytest.raises(ValueError, match=r"^upsample_respacing: "):
        service.step_defaults.set("upsample", "fast999")
    assert service.step_defaults.get() == {"base": "100", "upsample": "fast27"}


def test_a_request_gets_the_step_defaults_then_its_own_choices() -> None:
    service = fake_service(base_steps="40")
    request = build(service, upsample_steps="10", eta=0.0)
    settings = request.settings
    assert (settings.size, settings.base_respacing, settings.upsample_respacing) == (256, "40", "10")
    assert request.guidance_scale == GUIDANCE_SCALE.default
    assert settings.upsample_temp == UPSAMPLE_TEMP.default


def test_every_option_left_out_gets_the_declared_default() -> None:
    request = build(fake_service(), seed=5)
    values = {**request.settings.to_dict(), "guidance_scale": request.guidance_scale}
    for option in GENERATION_OPTIONS:
        if option.default is not None and option.field in values:
            assert values[option.field] == option.default, option.name
    assert request.seeds == (5,)
