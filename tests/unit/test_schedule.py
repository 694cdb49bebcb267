import math

import pytest

from recsys.config import TrainStageConfig
from recsys.train.schedule import lr_factor, optimizer_steps


def test_warmup_then_cosine_to_the_floor():
    stage = TrainStageConfig(warmup_ratio=0.1, min_lr_ratio=0.1, lr_schedule="cosine")
    f = [lr_factor(s, 100, stage) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # 10 warm-up steps, linear
    assert all(a < b for a, b in zip(f[:9], f[1:10], strict=True))
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))  # then never rises
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # halfway: the mean
    assert lr_factor(100, 100, stage) == pytest.approx(0.1) and lr_factor(500, 100, stage) == pytest.approx(0.1)


def test_constant_schedule_after_warmup():
    stage = TrainStageConfig(warmup_ratio=0.0, lr_schedule="constant")
    assert {lr_factor(s, 50, stage) for s in range(60)} == {1.0}


def test_optimizer_steps_count_windows_and_accumulation():
    stage = TrainStageConfig(batch_size=10, gradient_accumulation_steps=1)
    # 2 workers × 125 rows; windows of 80 rows → 8 batches + ceil(45 / 10) = 13 micro-batches.
    assert optimizer_steps(250, 2, stage, 8) == 13
    assert optimizer_steps(250, 2, TrainStageConfig(batch_size=10, gradient_accumulation_steps=4), 8) == 3
    assert optimizer_steps(3, 2, stage, 8) == 1
