"""Forecasters by their config name (`forecast.model`): the one table the stage, the benchmark
and the tests build them from."""

from __future__ import annotations

from recsys.forecast.models import STAT_MODELS, Forecaster, LightGBMModel, StatsModel
from recsys.forecast.neural import NeuralModel

FORECASTERS = (*STAT_MODELS, "lightgbm", "neural")


def make_forecaster(name: str, **options) -> Forecaster:
    """A forecaster by its config name (forecast.model); `options` go to its dataclass."""
    if name in STAT_MODELS:
        return StatsModel(name=name, kind=name, **options)
    if name == "lightgbm":
        return LightGBMModel(name=name, **options)
    if name == "neural":
        return NeuralModel(name=name, **options)
    raise ValueError(f"unknown forecaster {name!r}; use one of {', '.join(FORECASTERS)}")
