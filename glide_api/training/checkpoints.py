"""A run's checkpoints: writing its output folder and reading its training state back for exact resume.

At every checkpoint the output folder is a loadable model folder:

    config.json, model.safetensors   the EMA weights (what samples best), in `save_dtype`
    tokenizer.json | encoder.json…   the model's tokenizer (bytes, or the GPT-2 files)
    training-state.pt                raw weights, EMA (float32), AdamW state, step, history, settings
    loss.csv, loss.png               the loss per step and its curve

(and samples/, which `previews` writes). training-state.pt carries a format number:

- format 2 (written now): the AdamW state has the trainer's two parameter groups, the text encoder's
  (with its own `lr_scale`) after the rest.
- format 1: the same keys, but the AdamW state may have a single group holding every parameter in
  `model.parameters()` order (runs saved before the text encoder had its own learning rate); runs
  saved after that change still said format 1 with two groups. `upgrade_format_1` reads both.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import InvalidParameter
from ..models.model_folders import save_model_folder
from .plots import loss_curve

if TYPE_CHECKING:
    from .trainer import Trainer

logger = logging.getLogger(__name__)

STATE_FILE = "training-state.pt"
STATE_FORMAT = 2
READABLE_FORMATS = (1, 2)
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass
class History:
    """The per-step losses of a run (kept across resumes)."""

    rows: list[tuple[int, float, float, float]] = field(default_factory=list)  # step, loss, mse, vb

    def write(self, folder: Path) -> None:
        with open(folder / "loss.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "loss", "mse", "vb"])
            writer.writerows((s, f"{a:.6g}", f"{b:.6g}", f"{c:.6g}") for s, a, b, c in self.rows)
        if len(self.rows) >= 2:
            loss_curve([r[0] for r in self.rows], [r[1] for r in self.rows]).save(folder / "loss.png")


def save_checkpoint(trainer: Trainer) -> Path:
    """Write `trainer.out`: the EMA model folder, the training state (format 2), the loss curve."""
    out = trainer.out
    out.mkdir(parents=True, exist_ok=True)
    dtype = TORCH_DTYPES[trainer.config.save_dtype]
    ema = {k: v.detach().to("cpu", dtype) for k, v in trainer.ema.state_dict().items()}
    save_model_folder(out, config=trainer.model.config, state_dict=ema)
    trainer.tokenizer.save(out)
    state = {
        "format": STATE_FORMAT,
        "step": trainer.step,
        "model": _cpu(trainer.model.state_dict()),
        "ema": _cpu(trainer.ema.state_dict()),
        "optimizer": trainer.optimizer.state_dict(),
        "model_config": trainer.model.config.to_options(),
        "train_config": dataclasses.asdict(trainer.config),
        "data_dir": trainer.data_dir,
        "examples": len(trainer.data),
        "init": trainer.init,
        "history": [list(r) for r in trainer.history.rows],
        # All randomness derives from (seed, step): these two are the whole RNG state.
        "rng": {"seed": trainer.config.seed, "step": trainer.step},
    }
    tmp = out / f".{STATE_FILE}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, out / STATE_FILE)
    trainer.history.write(out)
    logger.info("saved step %d to %s", trainer.step, out)
    return out


def read_training_state(out: Path) -> dict[str, Any]:
    """The training state saved in the run folder `out`, as written (format 1 or 2).

    Raises ValueError when there is none, or when its format is not one this version reads.
    """
    path = out / STATE_FILE
    if not path.is_file():
        raise InvalidParameter(f"resume: {path} not found; nothing to resume")
    state = torch.load(path, map_location="cpu", weights_only=True)
    found = state.get("format")
    if found not in READABLE_FORMATS:
        readable = ", ".join(str(f) for f in READABLE_FORMATS)
        raise InvalidParameter(
            f"resume: {path} is in training-state format {found!r}; this version reads formats {readable}"
        )
    return state


def restore_training_state(trainer: Trainer, state: dict[str, Any]) -> None:
    """Put a state from `read_training_state` into a trainer built from its settings and weights:
    the EMA, the AdamW state, the step and the loss history."""
    if state["format"] == 1:
        state = upgrade_format_1(state, optimizer=trainer.optimizer, model=trainer.model)
    trainer.ema.load_state_dict(state["ema"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.step = int(state["step"])
    trainer.history = History([tuple(r) for r in state["history"]])


def upgrade_format_1(
    state: dict[str, Any], *, optimizer: torch.optim.Optimizer, model: torch.nn.Module
) -> dict[str, Any]:
    """A format-1 training state in format 2, for `optimizer` (today's groups) over `model`.

    A single-group AdamW state (see the module docstring) is split into today's groups; one that
    already has today's groups is kept. Optimizer states index parameters by position: in the
    single group, the order of `model.parameters()`; in today's, their order across the groups.
    """
    saved = state["optimizer"]
    if len(saved["param_groups"]) == 1:
        position = {id(p): i for i, p in enumerate(model.parameters())}
        old_index = [position[id(p)] for group in optimizer.param_groups for p in group["params"]]
        (old_group,) = saved["param_groups"]
        groups = [
            {**old_group, "lr_scale": group["lr_scale"], "params": group["params"]}
            for group in optimizer.state_dict()["param_groups"]
        ]
        moments = {new: saved["state"][old] for new, old in enumerate(old_index) if old in saved["state"]}
        saved = {"state": moments, "param_groups": groups}
    return {**state, "format": 2, "optimizer": saved}


def _cpu(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in state_dict.items()}
