"""Rolling-origin backtests: every forecaster refitted at each origin on the history before it,
scored on the `horizon` periods after it, by product segment.

The protocol (declared in every report, `PROTOCOL`):
- origins: `backtest.origins` Mondays, `backtest.step_weeks` apart, the last one `horizon` weeks
  before the end of the last whole week (or `backtest.last_origin`);
- products scored at an origin: every product sold before it, and the products first sold within
  the horizon ("new": the forecaster is told they exist and the week they go on sale, as a
  merchant knows its own launches; the log's only record of that week is the first sale, so it
  stands in for the listing date; their weeks before the launch count as zero demand);
- segments, by each product's units in the 13 weeks before the origin: top sellers (the top 10%),
  long tail (the bottom half), new (no sale before the origin), all;
- metrics (recsys.eval.metrics.forecast_metrics) pool the rows of every origin; MASE scales each
  series by its in-sample seasonal-naive MAE (lag 1 for series shorter than a season plus one).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from recsys.eval.metrics import forecast_metrics
from recsys.forecast.models import Forecaster, ForecastProblem, finalise
from recsys.forecast.series import SalesSeries

PROTOCOL = ("rolling origin: each forecaster refitted at every origin on the weeks before it; scored on the next "
            "`horizon` weeks for every product sold before the origin and every product first sold within the "
            "horizon (new: no history, told it exists and its launch week, the week of its first sale); segments by units in the 13 weeks "
            "before the origin (top sellers: top 10%, long tail: bottom 50%); metrics pooled over origins; MASE "
            "scaled by each series' in-sample seasonal-naive MAE")
SEGMENTS = ("all", "new", "top_sellers", "long_tail")
RECENT_WEEKS = 13


def backtest_origins(series: SalesSeries, horizon: int, origins: int, step_weeks: int,
                     last_origin: pd.Timestamp | None = None) -> list[pd.Timestamp]:
    """The origins, oldest first; each leaves `horizon` whole periods after it and some history before."""
    periods = series.periods
    if series.freq != "W":
        raise ValueError(f"the forecasters are weekly: build the series with freq 'W', not {series.freq!r}")
    if len(periods) < horizon + 2:
        raise ValueError(f"{len(periods)} whole weeks of sales: a backtest of horizon {horizon} needs at least {horizon + 2} "
                         "(some history before the first origin); lower forecast.horizon or set forecast.backtest.enabled: false")
    last = periods[-horizon] if last_origin is None else pd.Timestamp(last_origin).tz_localize(None).normalize()
    if last not in periods or periods.get_loc(last) + horizon > len(periods):
        raise ValueError(f"forecast.backtest.last_origin {last.date()} must be a period start with {horizon} whole "
                         f"periods after it (the data's periods run {periods[0].date()}..{periods[-1].date()})")
    step = pd.Timedelta(weeks=step_weeks)
    out = [last - step * k for k in range(origins)][::-1]
    if out[0] <= periods[1]:
        raise ValueError(f"{origins} origins {step_weeks} weeks apart start at {out[0].date()}, with no history "
                         "before it; use fewer forecast.backtest.origins or a smaller step_weeks")
    return out


def problem_at(series: SalesSeries, origin: pd.Timestamp, horizon: int, season_length: int, window: int,
               static: pd.DataFrame | None = None, calendar: pd.DataFrame | None = None,
               predict_horizon: int | None = None) -> ForecastProblem:
    """The problem at `origin`: new products are those first sold within `horizon`; forecasters
    predict `predict_horizon` periods (default `horizon`; the replenishment replay needs more)."""
    seen = series.history(origin)
    history = seen[["unique_id", "ds", "y", "orders"]]
    if static is not None and "revenue" in seen:  # the price as known at the origin: no later sales in it
        sold = seen[seen["y"] > 0]
        price = (sold["revenue"] / sold["y"]).groupby(sold["unique_id"]).median()
        static = static.set_index("unique_id")["price"].to_frame().assign(price=lambda d: price.reindex(d.index).fillna(d["price"]))
        static = static.reset_index()
    first = series.first_sale
    end = origin + pd.Timedelta(weeks=horizon)
    new = sorted(first.index[(first >= origin) & (first < end)])
    return ForecastProblem(history, origin, predict_horizon or horizon, new,
                           series.calendar if calendar is None else calendar, season_length, window, static,
                           launches={item: first[item] for item in new})


def seasonal_scale(history: pd.DataFrame, season_length: int) -> pd.Series:
    """Per series: in-sample MAE of the seasonal naive forecast (lag 1 where the series is not longer
    than a season)."""
    def mae(y: pd.Series) -> float:
        v = y.to_numpy(dtype=np.float64)
        lag = season_length if len(v) > season_length else 1
        return float(np.abs(v[lag:] - v[:-lag]).mean()) if len(v) > lag else np.nan

    return history.groupby("unique_id")["y"].apply(mae)


def segments_at(problem: ForecastProblem) -> dict[str, set]:
    recent = problem.history[problem.history["ds"] >= problem.origin - pd.Timedelta(weeks=RECENT_WEEKS)]
    units = recent.groupby("unique_id")["y"].sum().reindex(problem.history["unique_id"].unique(), fill_value=0.0)
    ranked = units.sort_values(ascending=False, kind="stable")
    top = set(ranked.index[: max(1, int(round(0.1 * len(ranked))))])
    tail = set(ranked.index[len(ranked) - len(ranked) // 2:])
    return {"new": set(problem.new_ids), "top_sellers": top, "long_tail": tail}


def score(rows: pd.DataFrame) -> dict:
    """forecast_metrics per segment of rows that carry a `segment_<name>` flag per row."""
    out = {"all": forecast_metrics(rows)}
    for name in SEGMENTS[1:]:
        out[name] = forecast_metrics(rows[rows[f"segment_{name}"]])
    return out


def run_backtest(series: SalesSeries, factories: dict[str, Callable[[], Forecaster]], origins: list[pd.Timestamp],
                 horizon: int, season_length: int, window: int, static: pd.DataFrame | None = None,
                 calendar: pd.DataFrame | None = None, predict_horizon: int | None = None, log=print) -> dict:
    """{"models": {model: {"metrics": {segment: metrics}, "fit_seconds", "predict_seconds", "fallbacks"}},
    "rows": the scored rows of every model, "forecasts": {model: {origin: its whole forecast}}}."""
    results, rows, forecasts = {}, [], {}
    for origin in origins:
        problem = problem_at(series, origin, horizon, season_length, window, static, calendar, predict_horizon)
        actual = series.actuals(origin, horizon)[["unique_id", "ds", "y"]]
        scale = seasonal_scale(problem.history, season_length)
        flags = segments_at(problem)
        for name, factory in factories.items():
            model = factory()
            t0 = time.perf_counter()
            model.fit(problem)
            t1 = time.perf_counter()
            raw = model.predict(problem)
            t2 = time.perf_counter()
            forecast = finalise(raw, problem, model.fallbacks)
            forecasts.setdefault(name, {})[origin] = forecast
            scored = actual.merge(forecast, on=["unique_id", "ds"], how="left")
            if scored["p50"].isna().any():
                raise RuntimeError(f"{name} at {origin.date()} left {int(scored['p50'].isna().sum())} rows unforecast")
            scored["scale"] = scored["unique_id"].map(scale)
            for seg, ids in flags.items():
                scored[f"segment_{seg}"] = scored["unique_id"].isin(ids)
            scored["model"], scored["origin"] = name, origin
            rows.append(scored)
            entry = results.setdefault(name, {"fit_seconds": 0.0, "predict_seconds": 0.0, "fallbacks": {}})
            entry["fit_seconds"] += t1 - t0
            entry["predict_seconds"] += t2 - t1
            for reason, n in model.fallbacks.items():
                entry["fallbacks"][reason] = entry["fallbacks"].get(reason, 0) + n
            log(f"  {origin.date()} {name}: fit {t1 - t0:.1f}s predict {t2 - t1:.1f}s "
                f"WAPE {forecast_metrics(scored)['wape']:.3f}")
    every = pd.concat(rows, ignore_index=True)
    for name, entry in results.items():
        entry["metrics"] = score(every[every["model"] == name])
    return {"models": results, "rows": every, "forecasts": forecasts, "origins": [str(o.date()) for o in origins], "protocol": PROTOCOL}
