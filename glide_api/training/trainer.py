"""Training and fine-tuning GLIDE models: the `Trainer`, its optimiser step and EMA, `fit`'s schedule.

Randomness never comes from global state: batch `step`'s data (see `data`), its timesteps and noise
come from generators seeded by (seed, step), and dropout runs under a forked RNG seeded the same
way. So the step number *is* the random state, and resuming from a checkpoint (see `checkpoints`,
which writes and reads the run's folder) continues exactly as the uninterrupted run would have (on
CPU, bit for bit). Preview grids are `previews`' job.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import checks
from ..diffusion.schedule import Schedule, q_sample
from ..errors import InvalidParameter
from ..models.glide import GlideUNet, autocast, create_model
from ..models.tokenizer import ByteTokenizer, Tokenizer, load_tokenizer
from ..models.weights_source import WeightsSource
from ..pipeline.loading import load_model, resolve_device
from .checkpoints import History, read_training_state, restore_training_state, save_checkpoint
from .data import ImageCaptionData, find_examples
from .losses import hybrid_loss, mse_weights
from .presets import model_config
from .previews import write_preview
from .settings import RESUMABLE_SETTINGS, TRAIN_PRECISIONS, TrainConfig

logger = logging.getLogger(__name__)

# The text encoder's parameters (top-level names); transformer_proj, its link to the U-Net, is not one.
TEXT_ENCODER = ("token_embedding", "positional_embedding", "padding_embedding", "transformer", "final_ln")


@dataclass(frozen=True)
class StepResult:
    """What one optimiser step reports; `saved`/`samples` say what was written after it."""

    step: int  # steps done, 1-based
    total: int
    loss: float
    mse: float
    vb: float
    lr: float
    grad_norm: float
    seconds: float
    saved: Path | None = None
    samples: Path | None = None


def step_seed(seed: int, step: int) -> int:
    """A 63-bit seed for everything random in one step."""
    state = np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> 1)


class Trainer:
    """Trains one GLIDE network (base or upsampler) on an `ImageCaptionData`.

    Build it with `Trainer.create` (a new run) or `Trainer.resume` (continue a run's folder), then
    iterate `fit()`, which yields a `StepResult` after every step and saves/samples on schedule.
    """

    def __init__(
        self,
        *,
        model: GlideUNet,
        tokenizer: Tokenizer,
        data: ImageCaptionData,
        config: TrainConfig,
        out: str | Path,
        device: str | torch.device = "auto",
        precision: str = "auto",
        data_dir: str | Path | None = None,
        init: str | None = None,
    ) -> None:
        if tokenizer.n_vocab != model.config.n_vocab:
            raise InvalidParameter(
                f"the {tokenizer.kind} tokenizer has {tokenizer.n_vocab} tokens but the "
                f"model's n_vocab is {model.config.n_vocab}"
            )
        checks.one_of("precision", precision, TRAIN_PRECISIONS)
        self.device = resolve_device(device)
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.precision = precision
        self.config, self.out, self.data, self.tokenizer = config, Path(out), data, tokenizer
        self.data_dir, self.init = (str(data_dir) if data_dir is not None else None), init
        self.model = model.float().to(self.device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        text, rest = [], []
        for name, parameter in self.model.named_parameters():
            (text if name.split(".")[0] in TEXT_ENCODER else rest).append(parameter)
        self.optimizer = torch.optim.AdamW(
            [{"params": rest, "lr_scale": 1.0}, {"params": text, "lr_scale": config.text_lr_scale}],
            lr=config.lr,
            weight_decay=config.weight_decay,
        )
        c = model.config
        self.schedule = Schedule(noise_schedule=c.noise_schedule, diffusion_steps=c.diffusion_steps)
        self.mse_weight = mse_weights(self.schedule, config.mse_weighting)
        self.step = 0
        self.history = History()

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        data_dir: str | Path,
        out: str | Path,
        config: TrainConfig,
        init: str | None = None,
        model: str | None = None,
        tokenizer: str | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        source: WeightsSource | None = None,
    ) -> Trainer:
        """A new run: fine-tune `init` (an official name or a model folder) or train `model` from
        scratch (a preset such as demo-base, or a JSON file of model options).

        The tokenizer is the initial model's own; from scratch it is `tokenizer` ("bytes" or
        "gpt2"; default: bytes when the config's n_vocab is 257, else gpt2). Official files come
        from `source` (default: `WeightsSource.from_env()`).
        """
        if (init is None) == (model is None):
            raise InvalidParameter(
                "give exactly one of init (a model to fine-tune) and model (a config to train from scratch)"
            )
        source = source or WeightsSource.from_env()
        if init is not None:
            loaded = load_model(init, device=torch.device("cpu"), precision="fp32", source=source)
            network, tok = loaded.network, loaded.tokenizer
        else:
            options = model_config(model)
            with torch.random.fork_rng(devices=[]):  # the initial weights follow from the seed too
                torch.manual_seed(config.seed)
                network = create_model(options)
            quiet_text_projection(network)
            kind = tokenizer or ("bytes" if options.n_vocab == ByteTokenizer().n_vocab else "gpt2")
            tok = ByteTokenizer() if kind == "bytes" else load_tokenizer(source=source)
        data = cls._data(data_dir, network, config)
        return cls(
            model=network,
            tokenizer=tok,
            data=data,
            config=config,
            out=out,
            device=device,
            precision=precision,
            data_dir=data_dir,
            init=init or model,
        )

    @classmethod
    def resume(
        cls,
        out: str | Path,
        *,
        steps: int | None = None,
        data_dir: str | Path | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        **changes: Any,
    ) -> Trainer:
        """Continue the run saved in `out` (to `steps` total, if given) exactly where it stopped.

        `changes` may alter the `RESUMABLE_SETTINGS` only (those that do not change what the steps
        already taken meant).
        """
        fixed = sorted(set(changes) - set(RESUMABLE_SETTINGS))
        if fixed:
            raise InvalidParameter(
                f"resume: a resumed run keeps its own settings; only {', '.join(RESUMABLE_SETTINGS)} "
                f"may change (got {', '.join(fixed)})"
            )
        out = Path(out)
        state = read_training_state(out)
        config = TrainConfig(
            **{**state["train_config"], **changes, **({"steps": steps} if steps is not None else {})}
        )
        network = create_model(state["model_config"], state["model"])
        tokenizer = load_tokenizer(folder=out, source=WeightsSource.from_env(offline=True))
        data_dir = data_dir or state["data_dir"]
        data = cls._data(data_dir, network, config)
        if len(data) != state["examples"]:
            logger.warning(
                "the data folder now has %d examples (the run started with %d): the data "
                "order differs from an uninterrupted run",
                len(data),
                state["examples"],
            )
        trainer = cls(
            model=network,
            tokenizer=tokenizer,
            data=data,
            config=config,
            out=out,
            device=device,
            precision=precision,
            data_dir=data_dir,
            init=state.get("init"),
        )
        restore_training_state(trainer, state)
        return trainer

    @staticmethod
    def _data(data_dir: str | Path, network: GlideUNet, config: TrainConfig) -> ImageCaptionData:
        c = network.config
        size = c.image_size
        if config.train_size is not None:
            # The U-Net is convolutional: a base model can learn at a lower resolution first (4x
            # cheaper at half size), then be fine-tuned at its own. Every level must stay even.
            step = 2 ** (len(c.channel_mults) - 1)
            if c.super_res or config.train_size % step:
                raise InvalidParameter(
                    f"train_size: base models only, and a multiple of {step} for this "
                    f"model (got {config.train_size}); upsamplers use patch_size"
                )
            size = config.train_size
        return ImageCaptionData(
            find_examples(data_dir),
            image_size=size,
            super_res=c.super_res,
            patch_size=config.patch_size,
            crop_min=config.crop_min,
            flip=config.flip,
            caption_dropout=config.caption_dropout,
            seed=config.seed,
        )

    # ---- training -----------------------------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        """The rate for 0-based step `step`: linear warm-up, then constant."""
        warmup = self.config.warmup_steps
        return self.config.lr * (min(1.0, (step + 1) / warmup) if warmup else 1.0)

    def train_step(self) -> StepResult:
        """One optimiser step on batch `self.step`; updates the EMA."""
        start = time.perf_counter()
        cfg, c, dev = self.config, self.model.config, self.device
        batch = self.data.batch(self.step, cfg.batch_size)
        seed = step_seed(cfg.seed, self.step)
        generator = torch.Generator().manual_seed(seed)
        t = torch.randint(0, c.diffusion_steps, (cfg.batch_size,), generator=generator)
        noise = torch.randn(batch.images.shape, generator=generator)
        if cfg.offset_noise:
            # "Offset noise": a flat per-channel shift is part of the noise too, so the model learns to
            # take an image's overall colour from its conditioning rather than trust x_t's mean.
            b, ch = noise.shape[:2]
            noise = noise + cfg.offset_noise * torch.randn(b, ch, 1, 1, generator=generator)
        tokens, mask = self.tokenizer.batch(batch.captions, c.text_ctx)
        x0, t, noise = batch.images.to(dev), t.to(dev), noise.to(dev)
        x_t = q_sample(self.schedule, x0, t, noise)
        extra = {"low_res": batch.low_res.to(dev)} if batch.low_res is not None else {}

        lr = self.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        devices = []
        if dev.type == "cuda":
            devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
        with torch.random.fork_rng(devices=devices):  # dropout, seeded per step
            torch.manual_seed(seed)
            with autocast(self.precision, dev):
                out = self.model(x_t, t, tokens.to(dev), mask.to(dev), **extra)
            terms = hybrid_loss(
                self.schedule,
                out,
                x0=x0,
                x_t=x_t,
                noise=noise,
                t=t,
                vb_lambda=cfg.vb_lambda,
                mse_weight=self.mse_weight,
            )
            loss = terms.loss.mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if cfg.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        else:
            norm = torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in self.model.parameters() if p.grad is not None])
            )
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        result = StepResult(
            step=self.step,
            total=cfg.steps,
            loss=loss.item(),
            mse=terms.mse.mean().item(),
            vb=terms.vb.mean().item(),
            lr=lr,
            grad_norm=float(norm),
            seconds=time.perf_counter() - start,
        )
        self.history.rows.append((result.step, result.loss, result.mse, result.vb))
        return result

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_rate, (1 + self.step) / (10 + self.step))
        for target, source in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            target.lerp_(source, 1.0 - decay)
        for target, source in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            target.copy_(source)

    def fit(self) -> Iterator[StepResult]:
        """Train to `config.steps`, yielding after every step; checkpoints every `save_every` steps
        and at the end, preview grids every `sample_every` steps and at the end."""
        cfg = self.config
        while self.step < cfg.steps:
            result = self.train_step()
            last = self.step == cfg.steps
            saved = samples = None
            if cfg.sample_every and (self.step % cfg.sample_every == 0 or last):
                samples = self.write_samples()
            if last or (cfg.save_every and self.step % cfg.save_every == 0):
                saved = self.save()
            yield dataclasses.replace(result, saved=saved, samples=samples)

    # ---- checkpoints and previews ---------------------------------------------------------------

    def save(self) -> Path:
        """Write the output folder: the EMA model folder, the training state, the loss curve."""
        return save_checkpoint(self)

    def write_samples(self) -> Path:
        """Sample the EMA model and write samples/step-NNNNNNN.png (and its prompts as .txt)."""
        return write_preview(
            ema=self.ema,
            tokenizer=self.tokenizer,
            examples=self.data.fixed(min(self.config.sample_count, len(self.data))),
            config=self.config,
            folder=self.out / "samples",
            step=self.step,
            device=self.device,
            precision=self.precision,
        )


def quiet_text_projection(network: GlideUNet) -> None:
    """Zero `transformer_proj`, the text's entry into the timestep embedding, for training from scratch.

    With GLIDE's default initialisation the untrained text encoder adds a random, prompt-dependent
    vector to every ResBlock's embedding. Early on that only disturbs denoising, so training learns
    to make the pooled text vector the same for every prompt (measured: prompts differ by 19% at
    initialisation and by 1% after 200 steps), and the text pathway then takes far longer to
    become useful. Starting the projection at zero (as GLIDE starts its residual branches) adds
    nothing at first, and its gradient grows it only along directions that help.
    """
    with torch.no_grad():
        network.transformer_proj.weight.zero_()
        network.transformer_proj.bias.zero_()


def describe_run(trainer: Trainer) -> str:
    """One line about a run, for the command line."""
    c = trainer.model.config
    params = sum(p.numel() for p in trainer.model.parameters())
    return (
        f"{c.kind} {c.image_size} px, {params / 1e6:.2f}M parameters, {trainer.tokenizer.kind} tokens, "
        f"{len(trainer.data)} examples, batch {trainer.config.batch_size}, on {trainer.device} "
        f"({trainer.precision}), step {trainer.step} of {trainer.config.steps}"
    )
