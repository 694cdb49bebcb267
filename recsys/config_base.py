"""The base of the typed config (recsys/config.py): the error type, the strict section, and what
every training stage's section shares. Its own module so that a section defined beside the task
it configures (recsys/config_forecast.py) can build on it without importing the whole tree."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the field and the fix."""


class _Section(BaseModel):
    # extra="forbid": a mistyped key is an error, not a silently ignored default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Settings a stage gives its own default: bounds and description stay in one place.
_Epochs = Annotated[
    int, Field(ge=1, le=10_000, description="most epochs; early stopping (finetune, ctr) may end sooner")
]
_BatchSize = Annotated[
    int, Field(ge=1, description="per-worker micro-batch (sequences; search.train: query-item pairs)")
]
_PeakLr = Annotated[float, Field(gt=0, le=1.0, description="peak learning rate")]
_WarmupRatio = Annotated[float, Field(ge=0.0, lt=1.0, description="share of optimizer steps spent warming up")]


class TrainStageConfig(_Section):
    """What every training stage under Ray Train + DeepSpeed shares: optimizer, lr schedule, ZeRO.

    Each stage's section is a subclass holding only the settings that stage reads (`pretrain`,
    `finetune`, `ctr`, `search.train`), so another stage's setting there is an error, not a
    silently ignored key.
    """

    epochs: _Epochs = 10
    batch_size: _BatchSize = 128
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: _PeakLr = 1e-3
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="cosine: linear warm-up to lr, then cosine decay to min_lr_ratio × lr at the last step"
    )
    warmup_ratio: _WarmupRatio = 0.05
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="final lr as a share of lr (cosine)")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage (0 = plain data parallel)")
    seed: int = 42

    # Extra words for the error when another stage's setting is put here (see _describe).
    refused_key_hints: ClassVar[dict[str, str]] = {}


class ValidatedStageConfig(TrainStageConfig):
    """A training stage that scores the valid split after every epoch (finetune, ctr)."""

    select_best: bool = Field(
        True,
        description="score the valid split after every epoch (finetune: NDCG@10, ctr: AUC) and export the best "
        "epoch's model, not the last",
    )
    early_stopping_patience: int = Field(
        0, ge=0, description="stop after this many epochs without a better valid score (0 = never)"
    )

    @model_validator(mode="after")
    def _patience_needs_validation(self) -> ValidatedStageConfig:
        if self.early_stopping_patience and not self.select_best:
            raise ValueError("early_stopping_patience needs select_best: true (the valid score it watches)")
        return self
