"""The `forecast` section of the typed config (recsys/config.py re-exports it): demand
forecasting, its backtest, replenishment and the neural forecaster's training stage."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from recsys.config_base import TrainStageConfig, _BatchSize, _Epochs, _PeakLr, _Section


class ForecastTrainConfig(TrainStageConfig):
    """`forecast.train`: the global neural forecaster on the one training loop (pinball loss over
    P10/P50/P90). No valid split inside the history (its last weeks are the most informative), so
    the last epoch is exported; epochs were chosen on validation origins (docs/forecast.md)."""

    refused_key_hints: ClassVar[dict[str, str]] = {"enabled": "forecast.enabled turns the forecast stage on and off"}

    epochs: _Epochs = 12
    batch_size: _BatchSize = 256
    lr: _PeakLr = 1e-3
    weight_decay: float = Field(1e-4, ge=0)
    zero_stage: Literal[0, 1, 2, 3] = Field(0, description="DeepSpeed ZeRO stage (0 = plain data parallel)")


class BacktestConfig(_Section):
    """Rolling-origin evaluation: `origins` cut dates, `step_weeks` apart, the last one as late as
    the horizon allows (or `last_origin`); each forecaster is refitted at every origin."""

    enabled: bool = Field(True, description="backtest every forecaster before publishing (false: publish only)")
    origins: int = Field(3, ge=1, le=52)
    step_weeks: int = Field(2, ge=1, le=52)
    last_origin: datetime | None = Field(None, description="the latest cut (a Monday); default: the last full week − horizon")


class ReplenishmentConfig(_Section):
    """Periodic review, order-up-to policy from the quantile forecasts (recsys/forecast/replenish.py)."""

    service_level: float = Field(0.95, gt=0.5, lt=1.0, description="target chance of no stock-out over lead time + review")
    lead_time_weeks: int = Field(1, ge=0, le=26, description="weeks from placing an order to receiving it")


class ForecastConfig(_Section):
    """`forecast`: weekly demand per product from the sales the logs hold (recsys/forecast)."""

    enabled: bool = Field(True, description="run the forecast stage and serve /forecast")
    model: Literal["neural", "lightgbm", "auto_ets", "auto_theta", "seasonal_naive"] = Field(
        "lightgbm", description="the forecaster the stage publishes and /forecast serves (all are backtested)")
    horizon: int = Field(4, ge=1, le=52, description="weeks the backtest scores")
    max_horizon: int = Field(12, ge=1, le=52, description="weeks published per product; /forecast?horizon= accepts 1..this")
    season_length: int = Field(52, ge=1, le=104, description="weeks in a season; shorter series fall back to naive (season 1)")
    window_weeks: int = Field(16, ge=2, le=104, description="recent weeks the global models read (lags, windows)")
    item_vectors: bool = Field(True, description="neural: the recommender's item vector (id, attributes, text) as a covariate")
    vector_dropout: float = Field(
        0.5, ge=0.0, lt=1.0, description="neural, training only: the share of examples with a sales history that see their "
        "product without its item vector, so the network learns to forecast from the history alone (a launch, with no "
        "history, always sees its vector)")
    vector_width: int = Field(8, ge=1, le=256, description="neural: the item vector's projection before it joins the other inputs")
    hidden_size: int = Field(256, ge=8, le=8192, description="neural: width of the network's hidden layers")
    members: int = Field(4, ge=1, le=32, description="neural: networks trained side by side in one run (each on its own "
                         "loss, from its own initial weights); the forecast is their mean")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="neural: dropout after each hidden layer")
    volume_weight: float = Field(
        0.0, ge=0.0, le=2.0, description="neural: each example's loss weighted by (1 + its recent weekly units)^this, "
        "so big sellers count more, as they do in WAPE and in stock value (0: every series alike)")
    holiday_country: str | None = Field(None, description="ISO country whose public holidays enter the calendar (e.g. GB)")
    series_per_task: int = Field(400, ge=1, description="series per Ray task when the statistical models fan out")
    cpus_per_task: float = Field(
        1.0, gt=0, description="Ray CPUs each fan-out task holds: 1 where Ray's CPUs are cores; where cluster.num_cpus "
        "counts more logical CPUs than the machine has cores, the cores' share (2 for 4 logical CPUs on 2 cores), "
        "or twice the tasks run at once on the same cores")
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    replenishment: ReplenishmentConfig = Field(default_factory=ReplenishmentConfig)
    train: ForecastTrainConfig = Field(default_factory=ForecastTrainConfig)

    @model_validator(mode="after")
    def _horizons_fit(self) -> ForecastConfig:
        if self.horizon > self.max_horizon:
            raise ValueError(f"horizon ({self.horizon}) must be ≤ max_horizon ({self.max_horizon})")
        lead = self.replenishment.lead_time_weeks
        if self.backtest.enabled and self.horizon + lead + 1 > self.max_horizon:
            raise ValueError(f"horizon + replenishment.lead_time_weeks + 1 ({self.horizon + lead + 1}) must be ≤ max_horizon "
                             f"({self.max_horizon}): the backtest's replay orders for the lead time past the last scored week")
        if self.replenishment.lead_time_weeks + 1 > self.max_horizon:
            raise ValueError(f"replenishment.lead_time_weeks + 1 ({self.replenishment.lead_time_weeks + 1}) must be ≤ "
                             f"max_horizon ({self.max_horizon}): the order-up-to level covers lead time + one review week")
        if self.holiday_country is not None:
            import holidays

            if self.holiday_country not in holidays.list_supported_countries():
                raise ValueError(f"holiday_country {self.holiday_country!r} is not a country the holidays package knows; "
                                 "use an ISO 3166 code such as GB, US, DE, or null")
        return self
