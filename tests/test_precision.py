"""Sampling precisions: weights stored once in their dtype at loading, never cast in a forward."""

from __future__ import annotations

import pytest
import torch
from golden import SMALL_CONFIGS, relative_error, small_model, tensors
from torch.utils._python_dispatch import TorchDispatchMode

import glide_api
from glide_api.pipeline.loading import prepare, resolve_precision

CPU = torch.device("cpu")


class WeightCasts(TorchDispatchMode):
    """Counts the dtype conversions whose source is the storage of one of `model`'s parameters."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        source = args[0] if args else None
        if (
            func is torch.ops.aten._to_copy.default
            and isinstance(source, torch.Tensor)
            and source.untyped_storage().data_ptr() in self.weights
        ):
            self.count += 1
        return func(*args, **(kwargs or {}))


def forward(model: torch.nn.Module, ref: dict[str, torch.Tensor]) -> torch.Tensor:
    extra = {k: ref[k] for k in ("low_res", "inpaint_image", "inpaint_mask") if k in ref}
    text = model.encode_text(ref["tokens"], ref["mask"])
    return model(ref["x"], ref["timesteps"], text=text, **extra)


def test_bf16_stores_the_torso_in_bf16_once_and_a_forward_casts_no_weight() -> None:
    ref = tensors("small-base.forward.safetensors")
    model = prepare(small_model("small-base"), device=CPU, precision="bf16")
    assert model.dtype == torch.bfloat16
    assert model.input_blocks[1][0].in_layers[2].weight.dtype == torch.bfloat16
    assert model.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32  # norms stay fp32
    with torch.no_grad(), WeightCasts(model) as casts:
        out = forward(model, ref)
    assert out.dtype == torch.float32
    assert casts.count == 0


def test_the_weight_cast_counter_sees_the_casts_of_autocast() -> None:
    # What bf16 sampling did before: fp32 weights cast in every forward (still how training runs).
    ref = tensors("small-base.forward.safetensors")
    model = small_model("small-base")
    with torch.no_grad(), glide_api.autocast("bf16", CPU), WeightCasts(model) as casts:
        forward(model, ref)
    assert casts.count > 50


@pytest.mark.parametrize("name", SMALL_CONFIGS)
def test_bf16_output_is_within_three_percent_of_the_float32_reference(name) -> None:
    # Measured 1.9-2.1% on these models (their weights random), 0.2-0.3% on the trained demo models.
    ref = tensors(f"{name}.forward.safetensors")
    model = prepare(small_model(name), device=CPU, precision="bf16")
    with torch.no_grad():
        out = forward(model, ref)
    assert relative_error(out, ref["output"]) < 3e-2


def test_fp32_stores_and_converts_nothing() -> None:
    model = prepare(small_model("small-base"), device=CPU, precision="fp32")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_auto_precision_is_fp32_on_the_cpu_and_fp16_needs_cuda() -> None:
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(ValueError, match="fp16 runs on CUDA only"):
        resolve_precision("fp16", CPU)
