"""What a stage gives the one training loop (recsys.train.loop): its model, its batches, its loss,
its validation and how its weights are exported. The loop does the rest (DeepSpeed, resume, ZeRO
export with gathered weights, metrics reduced over ranks, early stopping, seeds, checkpoints).

A task is built on the driver with everything it needs (plain arrays, typed config sections) and
travels to the workers inside `train_loop_config`; its methods run on the workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch


class TrainTask:
    """Base class of every trainable stage. Subclasses set `stage` (the config section it trains
    with), `stage_cfg` (that section, typed), `steps_per_epoch` (optimizer steps, for the lr
    schedule) and implement `build_model`, `batches` and `loss`."""

    stage: str
    stage_cfg: Any
    steps_per_epoch: int
    # The valid metric the best epoch is chosen by (higher is better); None: no validation, the
    # last epoch is exported.
    select_metric: str | None = None
    # Uses the Ray Dataset passed to the trainer as "train" (streamed in shards); tasks whose
    # examples travel inside the task leave it False.
    uses_train_dataset: bool = False

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def batches(self, epoch: int, rank: int, world: int) -> Iterable:
        """This rank's micro-batches of one epoch. Under ZeRO every forward is a collective: every
        rank must yield the same number of batches."""
        raise NotImplementedError

    def loss(self, engine, batch, rng) -> tuple[torch.Tensor, dict[str, float], int]:
        """(loss, {part name: value}, rows) of one micro-batch; `rng` is this rank's epoch rng."""
        raise NotImplementedError

    def validate(self, module, rank: int, world: int) -> dict[str, float]:
        """Metrics on the valid split, the same on every rank (gathered); only when select_metric is set."""
        raise NotImplementedError

    @property
    def early_stopping_patience(self) -> int:
        return int(getattr(self.stage_cfg, "early_stopping_patience", 0) or 0)

    def export(self, module, folder: Path) -> None:
        """Write the servable model (rank 0; under ZeRO-3 the loop has gathered the parameters)."""
        module.save_pretrained(folder)

    def run_key(self) -> dict:
        """What makes two runs the same run (a rerun with the same key resumes)."""
        return {"stage": self.stage, "stage_cfg": self.stage_cfg.model_dump(mode="json")}
