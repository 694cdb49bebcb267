"""Learning-rate schedule: linear warm-up, then cosine decay (or constant), per optimizer step."""

from __future__ import annotations

import math

from recsys.config import TrainStageConfig


def lr_factor(step: int, total_steps: int, stage: TrainStageConfig) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based) of `total_steps`."""
    warmup = int(stage.warmup_ratio * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    if stage.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return stage.min_lr_ratio + (1.0 - stage.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def optimizer_steps(rows: int, workers: int, stage: TrainStageConfig, window_batches: int) -> int:
    """Optimizer steps in one epoch: each worker gets rows / workers sequences in windows of
    `window_batches` micro-batches (a partial window still yields whole batches)."""
    per_worker = math.ceil(rows / workers)
    window = stage.batch_size * window_batches
    full, rest = divmod(per_worker, window)
    micro = full * window_batches + math.ceil(rest / stage.batch_size)
    return max(1, micro // stage.gradient_accumulation_steps)
