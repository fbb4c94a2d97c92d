"""The trainer: the hybrid loss, seeded data, loss going down, exact resume, loadable checkpoints, the CLI."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from glide_api.cli import main
from glide_api.diffusion.schedule import Schedule, q_sample
from glide_api.models.config import ModelConfig
from glide_api.models.weights_source import WeightsSource
from glide_api.pipeline.glide_pipeline import GlidePipeline
from glide_api.training import TrainConfig, Trainer
from glide_api.training.data import ImageCaptionData, find_examples
from glide_api.training.losses import discretized_gaussian_log_likelihood, hybrid_loss, mse_weights, normal_kl
from glide_api.training.synthetic import write_dataset

# 32 px models of about 0.5M parameters: a training step takes some tens of milliseconds.
TINY_BASE = {
    "image_size": 32,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,1,1",
    "num_head_channels": 32,
    "attention_resolutions": "8",
    "dropout": 0.1,
    "text_ctx": 24,
    "xf_width": 32,
    "xf_layers": 1,
    "xf_heads": 2,
    "n_vocab": 257,
}
TINY_UPSAMPLE = {**TINY_BASE, "super_res": True, "noise_schedule": "linear", "attention_resolutions": ""}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """24 synthetic images at 64 px (enough for 32 px models and a 32 px upsampler's crops)."""
    return write_dataset(tmp_path_factory.mktemp("shapes"), count=24, seed=3, size=64)


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    paths = {}
    for name, options in (("base", TINY_BASE), ("upsample", TINY_UPSAMPLE)):
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(ModelConfig.from_options(options).to_options()))
    return paths


def settings(**changes) -> TrainConfig:
    return TrainConfig(
        **{
            "steps": 6,
            "batch_size": 4,
            "lr": 1e-3,
            "crop_min": 0.8,
            "flip": True,
            "save_every": 0,
            "sample_every": 0,
            **changes,
        }
    )


# ---- the loss ----------------------------------------------------------------------------------


def test_normal_kl_is_zero_for_equal_gaussians_and_matches_the_closed_form() -> None:
    m, lv = torch.tensor([0.3]), torch.tensor([-1.0])
    assert normal_kl(m, lv, m, lv).item() == pytest.approx(0.0, abs=1e-7)
    # KL(N(0,1) || N(1, e^2)) = log(e) + (1 + 1) / (2 e^2) - 1/2
    expected = 1.0 + 2.0 / (2 * math.e**2) - 0.5
    kl = normal_kl(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([2.0]))
    assert kl.item() == pytest.approx(expected, rel=1e-6)


def test_discretised_gaussian_gives_the_256_levels_a_total_probability_of_one() -> None:
    levels = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    for mean, log_scale in ((0.1, -2.0), (-0.95, -4.0), (0.999, -1.0)):
        logp = discretized_gaussian_log_likelihood(
            levels, mean=torch.tensor(mean), log_scale=torch.tensor(log_scale)
        )
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-4)


def _diffused(steps: list[int], seed: int):
    """8-bit 8x8 pictures diffused to `steps` by the cosine schedule, and a random network output."""
    schedule = Schedule(noise_schedule="squaredcos_cap_v2")
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 256, (len(steps), 3, 8, 8), generator=gen).float() / 127.5 - 1
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.tensor(steps)
    out = torch.randn(len(steps), 6, 8, 8, generator=gen)
    return schedule, x0, noise, t, q_sample(schedule, x0, t, noise), out


def test_hybrid_loss_trains_epsilon_by_mse_and_the_variance_by_the_bound_only() -> None:
    schedule, x0, noise, t, x_t, out = _diffused([0, 1, 500, 999], seed=0)
    out.requires_grad_()
    terms = hybrid_loss(schedule, out, x0=x0, x_t=x_t, noise=noise, t=t)
    assert terms.mse.shape == terms.vb.shape == terms.loss.shape == (4,)
    torch.testing.assert_close(terms.mse, ((noise - out[:, :3]) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(terms.loss, terms.mse + terms.vb)  # λ·T = 0.001 · 1000
    assert (terms.vb >= 0).all()
    # The bound's gradient reaches v (channels 3-5) only: ε's gradient is the MSE's alone.
    terms.vb.sum().backward()
    assert out.grad[:, :3].abs().max() == 0 and out.grad[:, 3:].abs().max() > 0


@pytest.mark.parametrize(
    ("weighting", "expected"),
    [
        ("eps", lambda a: torch.ones_like(a)),
        ("p2", lambda a: 1 - a),  # 1 / (1 + SNR)
        ("truncated-snr", lambda a: ((1 - a) / a).clamp(1, 100)),  # max(1, 1 / SNR), at most 100
    ],
)
def test_mse_weightings_scale_each_samples_mse_by_its_noise_level(weighting, expected) -> None:
    schedule, x0, noise, t, x_t, out = _diffused([0, 100, 500, 850, 999], seed=1)
    plain = hybrid_loss(schedule, out, x0=x0, x_t=x_t, noise=noise, t=t)
    weighted = hybrid_loss(
        schedule, out, x0=x0, x_t=x_t, noise=noise, t=t, mse_weight=mse_weights(schedule, weighting)
    )
    assert torch.equal(weighted.mse, plain.mse) and torch.equal(weighted.vb, plain.vb)  # reported unweighted
    weight = expected(torch.tensor(schedule.alphas_cumprod[t.numpy()])).float()
    torch.testing.assert_close(weighted.loss, plain.mse * weight + plain.vb)


def test_training_settings_are_checked_by_name() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="offset_noise"):
        TrainConfig(offset_noise=-1)
    with pytest.raises(ValueError, match="save_dtype"):
        TrainConfig(save_dtype="int8")
    with pytest.raises(ValueError, match="train_size"):
        TrainConfig(train_size=0)
    with pytest.raises(ValueError, match="text_lr_scale"):
        TrainConfig(text_lr_scale=-1)
    with pytest.raises(ValueError, match="mse_weighting"):
        TrainConfig(mse_weighting="x0")


def test_hybrid_loss_refuses_a_respaced_schedule() -> None:
    schedule = Schedule(noise_schedule="linear", respacing="50")
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="full schedule"):
        hybrid_loss(schedule, torch.zeros(1, 6, 4, 4), x0=x, x_t=x, noise=x, t=torch.tensor([3]))


# ---- data ----------------------------------------------------------------------------------------


def test_batches_are_a_pure_function_of_seed_and_step(shapes) -> None:
    def data(seed):
        return ImageCaptionData(find_examples(shapes), image_size=32, crop_min=0.7, flip=True, seed=seed)

    a, b = data(1).batch(7, 4), data(1).batch(7, 4)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(data(2).batch(7, 4).images, a.images)
    assert a.images.shape == (4, 3, 32, 32) and a.low_res is None
    levels = (a.images + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # 8-bit values, like real images


def test_each_epoch_visits_every_example_once_in_a_fresh_order(shapes) -> None:
    data = ImageCaptionData(find_examples(shapes), image_size=32, seed=0)
    first = [data.index(p) for p in range(24)]
    second = [data.index(p) for p in range(24, 48)]
    assert sorted(first) == sorted(second) == list(range(24)) and first != second


def test_caption_dropout_empties_about_its_share_of_captions(shapes) -> None:
    data = ImageCaptionData(find_examples(shapes), image_size=32, caption_dropout=0.2, seed=0)
    captions = [data.item(p)[2] for p in range(400)]
    assert 0.13 < captions.count("") / 400 < 0.27


def test_upsampler_batches_pair_random_patches_with_their_8_bit_bicubic_reduction(shapes) -> None:
    data = ImageCaptionData(
        find_examples(shapes), image_size=64, super_res=True, patch_size=32, caption_dropout=0.0, seed=0
    )
    batch = data.batch(0, 3)
    assert batch.images.shape == (3, 3, 32, 32) and batch.low_res.shape == (3, 3, 8, 8)
    levels = (batch.low_res + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    # The low-res input is the patch itself, reduced: compare with PIL's antialiased bicubic.
    patch = Image.fromarray(((batch.images[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    expected = torch.tensor(np.asarray(patch.resize((8, 8), Image.Resampling.BICUBIC)))
    assert torch.equal(((batch.low_res[0] + 1) * 127.5).round().byte().permute(1, 2, 0), expected)


def test_a_folder_without_captions_is_refused(tmp_path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "lonely.png")
    with pytest.raises(ValueError, match=r"no image with a same-name \.txt caption"):
        find_examples(tmp_path)


# ---- training ------------------------------------------------------------------------------------


def test_from_scratch_the_text_enters_the_embedding_through_a_zeroed_projection(
    shapes, configs, tmp_path
) -> None:
    trainer = Trainer.create(
        data_dir=shapes,
        out=tmp_path / "new",
        model=str(configs["base"]),
        config=settings(steps=1),
        device="cpu",
    )
    assert trainer.model.transformer_proj.weight.abs().max() == 0
    trainer.save()
    # Fine-tuning keeps the weights it starts from.
    tuned = Trainer.create(
        data_dir=shapes,
        out=tmp_path / "tuned",
        init=str(tmp_path / "new"),
        config=settings(steps=1),
        device="cpu",
    )
    torch.testing.assert_close(tuned.model.token_embedding.weight, trainer.ema.token_embedding.weight)


def test_a_frozen_text_encoder_stays_put_while_the_rest_learns(shapes, configs, tmp_path) -> None:
    trainer = Trainer.create(
        data_dir=shapes,
        out=tmp_path,
        model=str(configs["base"]),
        device="cpu",
        config=settings(steps=4, text_lr_scale=0.0),
    )  # zero-init layers wake in turn
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    list(trainer.fit())
    after = trainer.model.state_dict()
    assert torch.equal(before["token_embedding.weight"], after["token_embedding.weight"])
    assert torch.equal(
        before["transformer.resblocks.0.mlp.c_fc.weight"], after["transformer.resblocks.0.mlp.c_fc.weight"]
    )
    assert not torch.equal(before["transformer_proj.weight"], after["transformer_proj.weight"])
    assert not torch.equal(before["out.2.weight"], after["out.2.weight"])


def test_a_base_model_can_train_at_a_lower_resolution_first(shapes, configs, tmp_path) -> None:
    trainer = Trainer.create(
        data_dir=shapes,
        out=tmp_path,
        model=str(configs["base"]),
        device="cpu",
        config=settings(steps=1, train_size=16),
    )
    assert trainer.data.batch(0, 2).images.shape == (2, 3, 16, 16)
    list(trainer.fit())
    with pytest.raises(ValueError, match="train_size"):
        Trainer.create(
            data_dir=shapes,
            out=tmp_path / "up",
            model=str(configs["upsample"]),
            device="cpu",
            config=settings(steps=1, train_size=16),
        )


def test_loss_goes_down_over_a_few_dozen_steps(shapes, configs, tmp_path) -> None:
    trainer = Trainer.create(
        data_dir=shapes,
        out=tmp_path,
        model=str(configs["base"]),
        config=settings(steps=40, batch_size=8, crop_min=1.0, flip=False),
        device="cpu",
    )
    losses = [r.loss for r in trainer.fit()]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.7 * first, (first, last)


def _train(shapes, configs, out, *, steps, resume=False, kind="base"):
    if resume:
        trainer = Trainer.resume(out, steps=steps, device="cpu")
    else:
        trainer = Trainer.create(
            data_dir=shapes,
            out=out,
            model=str(configs[kind]),
            device="cpu",
            config=settings(
                steps=steps,
                caption_dropout=0.5,
                offset_noise=0.1,
                patch_size=16 if kind == "upsample" else None,
            ),
        )
    for _ in trainer.fit():
        pass
    return trainer


@pytest.mark.parametrize("kind", ["base", "upsample"])
def test_resuming_reproduces_an_uninterrupted_run_bit_for_bit(shapes, configs, tmp_path, kind) -> None:
    straight = _train(shapes, configs, tmp_path / "straight", steps=6, kind=kind)
    _train(shapes, configs, tmp_path / "split", steps=3, kind=kind)
    resumed = _train(shapes, configs, tmp_path / "split", steps=6, resume=True)
    assert resumed.step == straight.step == 6
    for a, b in ((straight.model, resumed.model), (straight.ema, resumed.ema)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), name
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)
    assert [r[1] for r in straight.history.rows] == [r[1] for r in resumed.history.rows]


@pytest.mark.parametrize("groups", [1, 2])
def test_a_format_1_training_state_resumes_bit_for_bit(shapes, configs, tmp_path, groups) -> None:
    straight = _train(shapes, configs, tmp_path / "straight", steps=4)
    split = _train(shapes, configs, tmp_path / "split", steps=2)
    # Rewrite the state as format 1 was written: by the first trainers with one AdamW group, its
    # parameters indexed in model order; once the text encoder had its own group, with today's two.
    path = tmp_path / "split" / "training-state.pt"
    state = torch.load(path, weights_only=True)
    state["format"] = 1
    if groups == 1:
        grouped = [p for group in split.optimizer.param_groups for p in group["params"]]
        index = {id(p): i for i, p in enumerate(grouped)}
        saved = state["optimizer"]
        hyper = {k: v for k, v in saved["param_groups"][0].items() if k not in ("params", "lr_scale")}
        order = [index[id(p)] for p in split.model.parameters()]
        state["optimizer"] = {
            "state": {old: saved["state"][new] for old, new in enumerate(order)},
            "param_groups": [{**hyper, "params": list(range(len(order)))}],
        }
    torch.save(state, path)

    resumed = _train(shapes, configs, tmp_path / "split", steps=4, resume=True)
    for (name, x), y in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name
    assert torch.load(path, weights_only=True)["format"] == 2  # saved again in today's format


def test_a_training_state_of_an_unknown_format_is_refused_naming_the_file_and_formats(
    shapes, configs, tmp_path
) -> None:
    _train(shapes, configs, tmp_path / "run", steps=1)
    path = tmp_path / "run" / "training-state.pt"
    state = torch.load(path, weights_only=True)
    state["format"] = 3
    torch.save(state, path)
    expected = f"{path} is in training-state format 3; this version reads formats 1, 2"
    with pytest.raises(ValueError, match=re.escape(expected)):
        Trainer.resume(tmp_path / "run", device="cpu")


def test_bf16_training_runs_on_the_cpu_with_float32_master_weights(shapes, configs, tmp_path) -> None:
    trainer = Trainer.create(
        data_dir=shapes,
        out=tmp_path / "run",
        model=str(configs["base"]),
        device="cpu",
        precision="bf16",
        config=settings(steps=2),
    )
    results = list(trainer.fit())
    assert all(math.isfinite(r.loss) for r in results)
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}


def test_a_checkpoint_is_a_model_folder_the_pipeline_loads(shapes, configs, tmp_path) -> None:
    trainer = Trainer.create(
        data_dir=shapes,
        out=tmp_path / "run",
        model=str(configs["base"]),
        device="cpu",
        config=settings(steps=2, sample_every=2, sample_count=2, sample_steps="2", save_dtype="fp16"),
    )
    results = list(trainer.fit())
    assert results[-1].saved == tmp_path / "run" and results[-1].samples is not None
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "training-state.pt",
        "loss.csv",
        "loss.png",
        "samples/step-0000002.png",
    ):
        assert (tmp_path / "run" / name).is_file(), name
    pipeline = GlidePipeline.load(
        base=str(tmp_path / "run"),
        upsample=None,
        device="cpu",
        precision="fp32",
        source=WeightsSource.from_env(offline=True, cache=tmp_path / "empty-cache"),
    )
    from glide_api.pipeline.params import GenerationRequest

    output = pipeline.generate(GenerationRequest.create("a red circle", size=32, seed=1, base_respacing="2"))
    assert output.images[0].image.size == (32, 32)
    # The saved weights are the EMA's (here stored as fp16).
    ema = {k: v.half().float() for k, v in trainer.ema.state_dict().items()}
    for name, value in pipeline.base.network.state_dict().items():
        assert torch.equal(value, ema[name]), name


def test_an_upsampler_preview_shows_its_input_its_sample_and_the_original(shapes, configs, tmp_path) -> None:
    trainer = Trainer.create(
        data_dir=shapes,
        out=tmp_path / "run",
        model=str(configs["upsample"]),
        device="cpu",
        config=settings(sample_count=2, sample_steps="2"),
    )
    sheet = Image.open(trainer.write_samples())
    assert sheet.size == (2 * 32 + 2, 3 * 32 + 2 * 2)  # rows of two 32 px pictures, 2 px apart
    fixed = trainer.data.fixed(2)
    original = np.asarray(sheet)[68:100, :32].astype(float)
    expected = (fixed.images[0].permute(1, 2, 0).numpy() + 1) * 127.5
    assert np.abs(original - expected).max() <= 1


def test_the_train_command_writes_data_trains_and_resumes(tmp_path, configs, capsys) -> None:
    out = tmp_path / "run"
    common = ["--no-progress", "--device", "cpu", "--save-every", "2", "--sample-every", "0"]
    assert (
        main(
            [
                "train",
                "--synthetic",
                "12",
                "--config",
                str(configs["base"]),
                "--out",
                str(out),
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--mse-weighting",
                "p2",
                *common,
            ]
        )
        == 0
    )
    assert len(list((out / "data").glob("*.txt"))) == 12
    assert Trainer.resume(out, device="cpu").config.mse_weighting == "p2"
    assert "trained to step 2" in capsys.readouterr().out
    assert main(["train", "--resume", str(out), "--steps", "3", *common]) == 0
    assert "trained to step 3" in capsys.readouterr().out
    assert main(["train", "--resume", str(out), "--batch-size", "4"]) == 1
    assert "only steps, lr" in capsys.readouterr().err


def test_a_resumed_run_may_lower_the_learning_rate_and_keeps_its_optimiser_state(
    shapes, configs, tmp_path
) -> None:
    first = _train(shapes, configs, tmp_path / "run", steps=3)
    resumed = Trainer.resume(tmp_path / "run", steps=5, device="cpu", lr=2e-4)
    saved = first.optimizer.state_dict()["state"]
    for key, value in resumed.optimizer.state_dict()["state"].items():
        assert torch.equal(value["exp_avg"], saved[key]["exp_avg"])
    assert [r.lr for r in resumed.fit()] == [2e-4, 2e-4]
    assert Trainer.resume(tmp_path / "run", device="cpu").config.lr == 2e-4  # the new rate is kept


def test_the_synthetic_command_is_deterministic(tmp_path) -> None:
    assert main(["synthetic", str(tmp_path / "a"), "--count", "3", "--size", "32", "--seed", "4"]) == 0
    assert main(["synthetic", str(tmp_path / "b"), "--count", "3", "--size", "32", "--seed", "4"]) == 0
    for name in ("00000.png", "00002.png", "00002.txt", "metadata.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_the_synthetic_command_places_shapes_by_spread_and_rejects_a_bad_one(tmp_path, capsys) -> None:
    assert main(["synthetic", str(tmp_path / "c"), "--count", "8", "--size", "32", "--spread", "0"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "c" / "metadata.jsonl").read_text().splitlines()]
    assert {tuple(r["center"]) for r in rows} == {(0.5, 0.5)}
    assert main(["synthetic", str(tmp_path / "d"), "--spread", "0.7"]) == 1
    assert "spread: must be between 0 and 0.5" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
