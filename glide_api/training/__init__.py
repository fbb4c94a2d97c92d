"""Training and fine-tuning GLIDE models, and the synthetic shapes data set the demo models learn.

    from glide_api.training import Trainer, TrainConfig
    trainer = Trainer.create(data_dir="photos", out="runs/mine", init="base",
                             config=TrainConfig(steps=2000, batch_size=4))
    for result in trainer.fit():
        print(result.step, result.loss)

Modules: `settings` (TrainConfig), `data` (image + .txt folders, seeded order and crops), `losses`
(the hybrid objective), `trainer` (the Trainer: steps, EMA, optimiser, create and resume),
`checkpoints` (the run's folder and its versioned training state), `previews` (sample grids through
the pipeline), `synthetic` (the shapes data set and its classifier), `evaluate` (prompt adherence),
`presets` (the demo configurations), `plots` (loss curve and grids with PIL). Names are imported on
first use, so the command line can read `TrainConfig` without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["StepResult", "TrainConfig", "Trainer"]

_EXPORTS = {
    "StepResult": "glide_api.training.trainer",
    "Trainer": "glide_api.training.trainer",
    "TrainConfig": "glide_api.training.settings",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'glide_api.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
