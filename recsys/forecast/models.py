"""Forecasters behind one interface: fit on the history before an origin, predict P10/P50/P90 of the
next `horizon` periods for every product, the new ones included.

    seasonal_naive, auto_ets, auto_theta   statsforecast, one model per series (`StatsModel`),
                                           fanned out over Ray tasks (recsys/forecast/fanout.py)
    lightgbm                               mlforecast + LightGBM, one global model per quantile
                                           (`LightGBMModel`) on lags, rolling stats and the calendar
    neural                                 the global network of the one training loop
                                           (recsys/forecast/neural.py)

Every forecast goes through `finalise`: quantiles are sorted per row (P10 ≤ P50 ≤ P90, so they
never cross), negatives are clipped to 0 (demand is not negative), P10 is rounded down and P90 up
to whole units (a quantile of a count is a whole number), and products the model cannot
forecast get a named fallback (recorded in `fallbacks`), never a silent hole:
- a series shorter than the season length: the non-seasonal version (season length 1);
- a product with no history at the origin (launched within the horizon): zero, for every model that
  needs a history — the neural model forecasts it from its item vector instead.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys.eval.metrics import QUANTILES

COLUMNS = ["unique_id", "ds", "p10", "p50", "p90"]
STAT_MODELS = ("seasonal_naive", "auto_ets", "auto_theta")
INTERVAL = 80  # P10..P90 is the central 80% interval


@dataclass
class ForecastProblem:
    """What a forecaster made at `origin` may see."""

    history: pd.DataFrame  # unique_id, ds, y: periods before the origin, from each product's first sale
    origin: pd.Timestamp
    horizon: int
    new_ids: list[str]  # products with no sale before the origin that must be forecast too
    calendar: pd.DataFrame  # ds, week_of_year, holidays: covers the history and the horizon
    season_length: int
    window: int  # recent periods the global models read
    static: pd.DataFrame | None = None  # unique_id, price
    freq: str = "W-MON"
    launches: dict = field(default_factory=dict)  # new product → the week it goes on sale (a merchant knows it)

    @property
    def future(self) -> pd.DatetimeIndex:
        return pd.date_range(self.origin, periods=self.horizon, freq=self.freq)

    @property
    def lengths(self) -> pd.Series:
        return self.history.groupby("unique_id").size()


@dataclass
class Forecaster:
    name: str
    fallbacks: dict = field(default_factory=dict)

    def fit(self, problem: ForecastProblem) -> None:
        raise NotImplementedError

    def predict(self, problem: ForecastProblem) -> pd.DataFrame:
        """COLUMNS for every product of the history (and the new ones, where the model can)."""
        raise NotImplementedError


def finalise(frame: pd.DataFrame, problem: ForecastProblem, fallbacks: dict) -> pd.DataFrame:
    """Sorted, non-negative quantiles for every product of the history and every new one (zero
    where the model gave none, counted under fallbacks["no_history_zero"])."""
    wanted = pd.Index(problem.history["unique_id"].unique()).append(pd.Index(problem.new_ids)).unique()
    grid = pd.MultiIndex.from_product([wanted, problem.future], names=["unique_id", "ds"])
    have = frame.set_index(["unique_id", "ds"])[["p10", "p50", "p90"]]
    missing_ids = wanted.difference(have.index.get_level_values(0).unique())
    if len(missing_ids):
        fallbacks["no_history_zero"] = fallbacks.get("no_history_zero", 0) + len(missing_ids)
    out = have.reindex(grid)
    values = out.to_numpy(dtype=np.float64)
    # A lone NaN quantile (an interval statsforecast could not form) takes the median's value.
    values = np.where(np.isnan(values), values[:, [1]], values)
    values = np.sort(np.clip(np.nan_to_num(values, nan=0.0), 0.0, None), axis=1)
    # Demand comes in whole units, and a quantile of a count is a whole number: P10 rounds down and
    # P90 up (a P10 of 0.05 units means "none", which a continuous output never reaches exactly).
    values[:, 0], values[:, 2] = np.floor(values[:, 0] + 1e-9), np.ceil(values[:, 2] - 1e-9)
    out[["p10", "p50", "p90"]] = values
    return out.reset_index()


# ---- statsforecast ------------------------------------------------------------------------------
def _stat_model(kind: str, season: int):
    from statsforecast.models import AutoETS, AutoTheta, Naive, SeasonalNaive

    if kind == "seasonal_naive":
        return SeasonalNaive(season_length=season, alias=kind) if season > 1 else Naive(alias=kind)
    cls = {"auto_ets": AutoETS, "auto_theta": AutoTheta}[kind]
    return cls(season_length=season, alias=kind)


def stat_seasons(kind: str, lengths: pd.Series, season_length: int) -> pd.Series:
    """The season each series is fitted with: `season_length` when the series is long enough (one
    season for seasonal naive, two for ETS/Theta to estimate a seasonal pattern), else 1."""
    need = season_length if kind == "seasonal_naive" else 2 * season_length
    return pd.Series(np.where(lengths >= need, season_length, 1), index=lengths.index)


def fit_predict_stats(kind: str, history: pd.DataFrame, horizon: int, season: int, freq: str = "W-MON") -> pd.DataFrame:
    """One statsforecast model (season `season`) on every series of `history`, in this process →
    COLUMNS (raw: unsorted, possibly negative). The unit of work Ray tasks run (fanout.py)."""
    from statsforecast import StatsForecast
    from statsforecast.models import Naive

    sf = StatsForecast(models=[_stat_model(kind, season)], freq=freq, n_jobs=1, fallback_model=Naive(alias=kind))
    out = sf.forecast(df=history[["unique_id", "ds", "y"]], h=horizon, level=[INTERVAL]).reset_index(drop=False)
    return pd.DataFrame({"unique_id": out["unique_id"].astype(str), "ds": pd.to_datetime(out["ds"]),
                         "p10": out[f"{kind}-lo-{INTERVAL}"], "p50": out[kind], "p90": out[f"{kind}-hi-{INTERVAL}"]})


@dataclass
class StatsModel(Forecaster):
    """A statsforecast model per series; `run(kind, history, horizon, season)` fits and predicts a
    group of series (in-process by default, or Ray tasks: fanout.ray_runner)."""

    kind: str = "auto_ets"
    run: object = None
    _forecast: pd.DataFrame | None = None

    def fit(self, problem: ForecastProblem) -> None:
        run = self.run or fit_predict_stats
        seasons = stat_seasons(self.kind, problem.lengths, problem.season_length)
        short = int((seasons < problem.season_length).sum()) if problem.season_length > 1 else 0
        if short:
            self.fallbacks[f"season_1_shorter_than_{problem.season_length if self.kind == 'seasonal_naive' else 2 * problem.season_length}"] = short
        parts = []
        for season, ids in seasons.groupby(seasons).groups.items():
            part = problem.history[problem.history["unique_id"].isin(ids)]
            parts.append(run(self.kind, part, problem.horizon, int(season)))
        self._forecast = pd.concat(parts, ignore_index=True)

    def predict(self, problem: ForecastProblem) -> pd.DataFrame:
        return self._forecast


# ---- mlforecast + LightGBM ----------------------------------------------------------------------
def _exogenous(problem: ForecastProblem, frame: pd.DataFrame) -> pd.DataFrame:
    """Calendar (week of year, holidays) and the product's age in periods, beside unique_id, ds."""
    first = problem.history.groupby("unique_id")["ds"].min()
    out = frame.merge(problem.calendar[["ds", "week_of_year", "holidays"]], on="ds", how="left")
    step = pd.Timedelta(problem.future[1] - problem.future[0]) if problem.horizon > 1 else pd.Timedelta(days=7)
    out["age"] = ((out["ds"] - out["unique_id"].map(first)) / step).astype(np.float64)
    return out


@dataclass
class LightGBMModel(Forecaster):
    """mlforecast with one LightGBM quantile regressor per quantile on log1p(units): lags 1..4, 8,
    12 (within `window`), rolling means and standard deviations, week of year, holidays, age, price.
    Recursive over the horizon (each quantile model feeds its own forecasts back as lags)."""

    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    seed: int = 0
    _model: object = None

    def _lags(self, window: int) -> list[int]:
        return [lag for lag in (1, 2, 3, 4, 8, 12) if lag <= window]

    def fit(self, problem: ForecastProblem) -> None:
        from lightgbm import LGBMRegressor
        from mlforecast import MLForecast
        from mlforecast.lag_transforms import RollingMean, RollingStd
        from mlforecast.target_transforms import GlobalSklearnTransformer
        from sklearn.preprocessing import FunctionTransformer

        models = {f"p{round(q * 100)}": LGBMRegressor(
            objective="quantile", alpha=q, n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            num_leaves=self.num_leaves, min_child_samples=20, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
            random_state=self.seed, n_jobs=1, verbose=-1) for q in QUANTILES}
        window = problem.window
        self._model = MLForecast(
            models=models, freq=problem.freq, lags=self._lags(window),
            lag_transforms={1: [RollingMean(window_size=4), RollingStd(window_size=4), RollingMean(window_size=min(12, window))]},
            target_transforms=[GlobalSklearnTransformer(FunctionTransformer(np.log1p, np.expm1))],
        )
        df = _exogenous(problem, problem.history[["unique_id", "ds", "y"]])
        if problem.static is not None:
            df = df.merge(problem.static[["unique_id", "price"]], on="unique_id", how="left")
        self._static = ["price"] if problem.static is not None else []
        with warnings.catch_warnings():  # short series' empty lags: expected, LightGBM takes the NaNs
            warnings.filterwarnings("ignore", category=UserWarning, module="mlforecast")
            self._model.fit(df, static_features=self._static)

    def predict(self, problem: ForecastProblem) -> pd.DataFrame:
        ids = problem.history["unique_id"].unique()
        grid = pd.DataFrame({"unique_id": np.repeat(ids, problem.horizon), "ds": np.tile(problem.future, len(ids))})
        x = _exogenous(problem, grid)[["unique_id", "ds", "week_of_year", "holidays", "age"]]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="mlforecast")
            out = self._model.predict(problem.horizon, X_df=x)
        return out.rename(columns=str)[COLUMNS]
