"""Online answers of a published demand forecast (`GET /forecast/{item_id}`): a ForecastRelease held
in memory, per product its P10/P50/P90 by week and the replenishment advice. The numbers are the
release's own (computed once by the forecast stage), so the served forecast is the offline one."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.artifacts import ForecastRelease
from recsys.online.engine import InvalidRequest


class ForecastService:
    def __init__(self, release: ForecastRelease):
        self.release = release
        m = release.manifest
        self.version, self.max_horizon, self.origin = m["version"], int(m["max_horizon"]), m["origin"]
        self.replenishment = m["replenishment"]
        frame = pd.read_parquet(release.path / "forecasts.parquet").sort_values(["unique_id", "ds"])
        self.ids = {item: row for row, item in enumerate(frame["unique_id"].unique())}
        steps = frame.groupby("unique_id").size()
        if (steps != self.max_horizon).any():
            raise ValueError(f"{release.path}: every product needs {self.max_horizon} forecast weeks")
        shape = (len(self.ids), self.max_horizon)
        self.weeks = [str(d.date()) for d in pd.to_datetime(frame["ds"].iloc[: self.max_horizon])]
        self.values = {q: frame[q].to_numpy(dtype=np.float64).reshape(shape) for q in ("p10", "p50", "p90")}
        advice = pd.read_parquet(release.path / "advice.parquet").set_index("unique_id").reindex(list(self.ids))
        self.advice = advice[["reorder_point", "order_up_to"]].to_numpy(dtype=np.float64)

    def answer(self, item_id: str, horizon: int | None) -> dict:
        """The forecast of `item_id` for the next `horizon` weeks (default the release's max_horizon)."""
        horizon = self.max_horizon if horizon is None else horizon
        if not 1 <= horizon <= self.max_horizon:
            raise InvalidRequest("horizon", f"horizon must be within 1..{self.max_horizon} weeks (forecast.max_horizon), got {horizon}")
        row = self.ids.get(item_id)
        if row is None:
            raise InvalidRequest("item_id", f"no forecast for product {item_id!r} in forecast version {self.version}", status=404)
        weeks = [{"week": self.weeks[k], **{q: float(self.values[q][row, k]) for q in ("p10", "p50", "p90")}}
                 for k in range(horizon)]
        reorder, up_to = self.advice[row]
        return {"item_id": item_id, "version": self.version, "origin": self.origin, "model": self.release.manifest["model"],
                "weeks": weeks, "total_p50": float(sum(w["p50"] for w in weeks)),
                "replenishment": {"reorder_point": float(reorder), "order_up_to": float(up_to), **self.replenishment}}
