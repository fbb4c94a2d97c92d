"""The networks: official layouts, reference forward passes, strict loading, precision modes."""

from __future__ import annotations

import math

import pytest
import torch
from golden import (
    SMALL_CONFIGS,
    golden_json,
    manifest,
    relative_error,
    small_model,
    tensors,
)

import glide_api
from glide_api.errors import StateDictMismatch
from glide_api.models.config import ModelConfig
from glide_api.models.glide import create_model

OFFICIAL = ("base", "upsample", "base-inpaint", "upsample-inpaint")
PARAMETER_COUNTS = {
    "base": 385_030_726,
    "upsample": 398_361_286,
    "base-inpaint": 385_037_638,
    "upsample-inpaint": 398_368_198,
}


def meta_model(config):
    with torch.device("meta"):
        return create_model(config)


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_variant_has_exact_checkpoint_keys_shapes_and_order(name) -> None:
    state = meta_model(name).state_dict()
    expected = manifest(name)
    assert list(state) == list(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert sum(v.numel() for v in state.values()) == PARAMETER_COUNTS[name]


@pytest.mark.parametrize("name", SMALL_CONFIGS)
def test_forward_matches_reference_output(name) -> None:
    model = small_model(name)
    ref = tensors(f"{name}.forward.safetensors")
    extra = {k: ref[k] for k in ("low_res", "inpaint_image", "inpaint_mask") if k in ref}
    with torch.no_grad():
        out = model(ref["x"], ref["timesteps"], tokens=ref["tokens"], mask=ref["mask"], **extra)
    assert out.shape == ref["output"].shape and out.dtype == torch.float32
    assert relative_error(out, ref["output"]) <= 1e-4


def test_precomputed_text_embedding_gives_the_same_output() -> None:
    model = small_model("small-base")
    ref = tensors("small-base.forward.safetensors")
    with torch.no_grad():
        text = model.encode_text(ref["tokens"], ref["mask"])
        a = model(ref["x"], ref["timesteps"], text=text)
        b = model(ref["x"], ref["timesteps"], tokens=ref["tokens"], mask=ref["mask"])
    assert torch.equal(a, b)


def reference_attention(q, k, v):
    """The reference's form: q and k each scaled by d^-1/4, softmax in float32."""
    scale = 1 / math.sqrt(math.sqrt(q.shape[-1]))
    w = torch.einsum("bhtd,bhsd->bhts", q * scale, k * scale)
    w = torch.softmax(w.float(), dim=-1).type(w.dtype)
    return torch.einsum("bhts,bhsd->bhtd", w, v)


def test_fused_attention_matches_reference_form() -> None:
    from glide_api.models.layers import attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 6, 300, 64, generator=g) * 3 for _ in range(3))
    assert relative_error(attention(q, k, v), reference_attention(q, k, v)) < 1e-5


def reference_attention_block(block, x, encoder_out):
    """The reference's AttentionBlock (SPEC §3.4): 1x1 convs on [B, C, N], text keys/values in every call."""
    b, c, height, width = x.shape
    heads, d = block.num_heads, c // block.num_heads
    qkv = block.qkv(block.norm(x).reshape(b, c, -1)).reshape(b * heads, 3 * d, -1)
    q, k, v = qkv.split(d, dim=1)  # [B*H, d, N]
    ek, ev = block.encoder_kv(encoder_out).reshape(b * heads, 2 * d, -1).split(d, dim=1)
    k, v = torch.cat([ek, k], dim=-1), torch.cat([ev, v], dim=-1)
    scale = 1 / math.sqrt(math.sqrt(d))
    w = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
    return x + block.proj_out(a).reshape(b, c, height, width)


def test_attention_block_with_text_keys_values_computed_once_matches_the_reference_block() -> None:
    from glide_api.models.layers import AttentionBlock

    torch.manual_seed(0)
    block = AttentionBlock(channels=192, num_heads=3, encoder_channels=64, text_index=0)
    for p in block.parameters():  # proj_out starts at zero: give every weight a value
        torch.nn.init.normal_(p, std=0.1)
    x, encoder_out = torch.randn(2, 192, 16, 16), torch.randn(2, 64, 16)
    with torch.no_grad():
        out = block(x, block.text_keys_values(encoder_out))
        ref = reference_attention_block(block.double(), x.double(), encoder_out.double())
    assert out.dtype == torch.float32
    assert relative_error(out.double(), ref) < 1e-6


def test_text_keys_values_are_computed_by_encode_text_and_not_by_a_step() -> None:
    from glide_api.models.layers import AttentionBlock

    model = small_model("small-base")
    ref = tensors("small-base.forward.safetensors")
    blocks = [m for m in model.modules() if isinstance(m, AttentionBlock)]
    calls = []
    for block in blocks:
        block.encoder_kv.register_forward_hook(lambda module, args, out: calls.append(module))
    with torch.no_grad():
        text = model.encode_text(ref["tokens"], ref["mask"])
        assert len(calls) == len(blocks) == len(text.kv) > 0
        out = model(ref["x"], ref["timesteps"], text=text)
    assert len(calls) == len(blocks)  # the step used the stored keys and values
    assert relative_error(out, ref["output"]) <= 1e-5


def test_rows_of_a_text_embedding_equal_encoding_those_prompts_alone() -> None:
    model = small_model("small-base")
    ref = tensors("small-base.forward.safetensors")
    with torch.no_grad():
        row = model.encode_text(ref["tokens"], ref["mask"]).rows([1])
        alone = model.encode_text(ref["tokens"][1:], ref["mask"][1:])
    assert len(row) == 1 and len(row.kv) == len(alone.kv)
    got = [row.proj, row.tokens, *(t for kv in row.kv for t in kv)]
    want = [alone.proj, alone.tokens, *(t for kv in alone.kv for t in kv)]
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        assert relative_error(a, b) < 1e-6


def test_strict_loading_lists_missing_unexpected_and_misshaped_keys() -> None:
    model = create_model(golden_json()["configs"]["small-base"])
    state = {k: v.float() for k, v in tensors("small-base.weights.safetensors").items()}
    del state["final_ln.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["out.2.bias"] = torch.zeros(7)
    with pytest.raises(StateDictMismatch) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert "1 missing key(s): final_ln.bias" in message
    assert "1 unexpected key(s): extra.weight" in message
    assert "out.2.bias [7] (expected [6])" in message


def test_base_weights_do_not_load_into_an_upsampler() -> None:
    model = create_model(golden_json()["configs"]["small-upsample"])
    state = tensors("small-base.weights.safetensors")
    with pytest.raises(StateDictMismatch, match="upsample"):
        model.load_state_dict(state)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_storage_follows_the_reference_dtype_rule(half) -> None:
    model = meta_model("base").convert_torso(half)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    for key in (
        "input_blocks.0.0.weight",
        "input_blocks.5.1.qkv.weight",
        "input_blocks.5.1.encoder_kv.bias",
        "input_blocks.5.0.skip_connection.weight",
        "transformer.resblocks.0.attn.c_qkv.weight",
        "transformer_proj.weight",
        "token_embedding.weight",
    ):
        assert dtypes[key] == half, key
    for key in (
        "positional_embedding",
        "padding_embedding",
        "time_embed.0.weight",
        "input_blocks.1.0.emb_layers.1.weight",
        "input_blocks.1.0.in_layers.0.weight",
        "out.2.weight",
        "final_ln.weight",
        "transformer.resblocks.0.ln_1.weight",
    ):
        assert dtypes[key] == torch.float32, key
    assert model.dtype == half


def test_fp16_weights_run_and_return_float32_close_to_fp32() -> None:
    ref = tensors("small-base.forward.safetensors")
    model = small_model("small-base").convert_to_fp16()
    with torch.no_grad():
        out = model(ref["x"], ref["timesteps"], tokens=ref["tokens"], mask=ref["mask"])
    assert out.dtype == torch.float32
    assert relative_error(out, ref["output"]) < 1e-2


def test_bf16_autocast_runs_close_to_fp32() -> None:
    ref = tensors("small-base.forward.safetensors")
    model = small_model("small-base")
    with torch.no_grad(), glide_api.autocast("bf16", "cpu"):
        out = model(ref["x"], ref["timesteps"], tokens=ref["tokens"], mask=ref["mask"])
    assert out.dtype == torch.float32
    assert relative_error(out.float(), ref["output"]) < 5e-2


def test_public_api_builds_every_official_variant_by_name() -> None:
    for name in OFFICIAL:
        model = meta_model(name)
        assert model.config.kind == name
        assert not model.training


def test_partial_option_dict_is_completed_from_its_kinds_defaults() -> None:
    config = ModelConfig.from_options({"super_res": True, "inpaint": True})
    assert config == ModelConfig.preset("upsample-inpaint")
    assert config.image_size == 256 and config.noise_schedule == "linear"
    assert ModelConfig.from_options({"num_channels": 64}).image_size == 64


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_size": 96}, "image_size=96"),
        ({"image_size": 32, "channel_mult": "1,2"}, "must equal 2\\*\\*"),
        ({"imagesize": 64}, "unknown model option\\(s\\) 'imagesize'"),
        ({"noise_schedule": "cosine"}, "noise_schedule='cosine'"),
        ({"num_channels": 100}, "multiple of 32"),
        ({"xf_heads": 7}, "xf_heads=7"),
        ({"attention_resolutions": "32,x"}, "attention_resolutions"),
    ],
)
def test_invalid_config_is_a_value_error_naming_the_option(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        create_model(options)


def test_unknown_model_name_lists_the_official_names() -> None:
    with pytest.raises(ValueError, match="base, base-inpaint, upsample, upsample-inpaint"):
        create_model("bse")


def test_wrong_token_length_is_a_value_error() -> None:
    model = small_model("small-base")
    with pytest.raises(ValueError, match=r"tokens must have shape \[batch, 16\]"):
        model.encode_text(torch.zeros(1, 128, dtype=torch.long), torch.ones(1, 128, dtype=torch.bool))


def test_upsampler_without_low_res_is_a_value_error() -> None:
    model = small_model("small-upsample")
    ref = tensors("small-upsample.forward.safetensors")
    with pytest.raises(ValueError, match="low_res"):
        model(ref["x"], ref["timesteps"], tokens=ref["tokens"], mask=ref["mask"])
