"""Replenishment from quantile forecasts, and the simulator that replays held-out weeks.

Timing (one review per week): an order placed at the end of week t arrives at the start of week
t + 1 + L (L = `lead_time_weeks`). The order placed at the end of week t is the last to arrive
before the end of week t + 1 + L, so it must cover the demand of the L + 1 weeks t + 1 .. t + 1 + L:

- order-up-to level S_t: the `service_level` quantile of that (L + 1)-week demand; at each review
  the policy orders S_t − inventory position (on hand + on order), never less than 0;
- reorder point: the service-level quantile of the demand over the lead time alone (L weeks; one
  week when L = 0) — below it an order placed now arrives too late (the advice /forecast serves).

The quantile of a sum of weeks comes from each week's P50 and its upper spread
σ = (P90 − P50) / z(0.9) (a split normal: demand is skewed, and only the upper tail decides a
stock-out): Σ P50 + z(service level) · sqrt(Σ σ²), rounded up to whole units.

The naive policy orders, at the end of each week, what sold in it (and starts the replay with the
last history week's sales × (L + 1) on hand). Both start with nothing on order. Sales a shelf
cannot serve are lost (not back-ordered). Reported per policy, over every (product, week) replayed:
fill rate (units served / units demanded), stock-out weeks (weeks with unmet demand), average units
on hand (mean of the start and the end of each week), lost units.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

Z90 = float(norm.ppf(0.9))


def quantile_of_sum(p50: np.ndarray, p90: np.ndarray, service_level: float) -> np.ndarray:
    """(..., weeks) → (...,): the service-level quantile of the weeks' total demand."""
    sigma = np.clip(p90 - p50, 0, None) / Z90
    total = p50.sum(-1) + float(norm.ppf(service_level)) * np.sqrt((sigma ** 2).sum(-1))
    return np.ceil(np.clip(total, 0, None) - 1e-9)


def advice(p50: np.ndarray, p90: np.ndarray, service_level: float, lead_time: int) -> dict[str, np.ndarray]:
    """(products, weeks ≥ L + 1) forecasts from the next week on → reorder point, order-up-to level."""
    if p50.shape[-1] < lead_time + 1:
        raise ValueError(f"advice needs {lead_time + 1} forecast weeks (lead time + one review), got {p50.shape[-1]}")
    lead = max(lead_time, 1)
    return {"reorder_point": quantile_of_sum(p50[..., :lead], p90[..., :lead], service_level),
            "order_up_to": quantile_of_sum(p50[..., : lead_time + 1], p90[..., : lead_time + 1], service_level)}


def simulate(demand: np.ndarray, levels: np.ndarray | None, start: np.ndarray, lead_time: int) -> dict[str, float]:
    """Replay `demand` (products, weeks). `levels` (products, weeks): the order-up-to level of each
    week's review (None: the naive policy, order what sold). `start`: units on hand at the start."""
    products, weeks = demand.shape
    on_hand = start.astype(np.float64).copy()
    arriving = np.zeros((products, weeks + lead_time + 2))
    served = lost = stock = 0.0
    stockout_weeks = 0
    for t in range(weeks):
        on_hand += arriving[:, t]
        begin = on_hand.copy()
        sold = np.minimum(on_hand, demand[:, t])
        short = demand[:, t] - sold
        on_hand -= sold
        served, lost = served + sold.sum(), lost + short.sum()
        stockout_weeks += int((short > 0).sum())
        stock += ((begin + on_hand) / 2).sum()
        on_order = arriving[:, t + 1:].sum(1)
        order = demand[:, t] if levels is None else np.clip(levels[:, t] - on_hand - on_order, 0, None)
        arriving[:, t + 1 + lead_time] += order
    total = served + lost
    return {"fill_rate": float(served / total) if total else 1.0, "stockout_weeks": stockout_weeks,
            "product_weeks": int(products * weeks), "average_on_hand": float(stock / (products * weeks)),
            "lost_units": float(lost), "demand_units": float(total)}


FRONTIER_LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
NAIVE_COVER = (1, 2, 3, 4, 6)  # weeks of last week's sales the naive policy starts with


def replay(forecasts: pd.DataFrame, actuals: pd.DataFrame, last_week_sales: pd.Series, horizon: int,
           service_level: float, lead_time: int) -> dict[str, dict]:
    """Both policies over the `horizon` weeks after one origin. `forecasts`: unique_id, ds, p50, p90
    for at least horizon + L + 1 weeks from the origin; `actuals`: unique_id, ds, y for the horizon;
    `last_week_sales`: units in the week before the origin, per product replayed.

    Also the trade-off each policy family offers ("frontier"): the forecast policy at every service
    level of FRONTIER_LEVELS, the naive one starting with NAIVE_COVER weeks of last week's sales."""
    ids = list(last_week_sales.index)
    p50 = forecasts.pivot(index="unique_id", columns="ds", values="p50").reindex(ids).to_numpy()
    p90 = forecasts.pivot(index="unique_id", columns="ds", values="p90").reindex(ids).to_numpy()
    if p50.shape[1] < horizon + lead_time + 1 or np.isnan(p50).any():
        raise ValueError(f"the replay needs forecasts of {horizon + lead_time + 1} weeks for every product replayed")
    demand = actuals.pivot(index="unique_id", columns="ds", values="y").reindex(ids).fillna(0.0).to_numpy()[:, :horizon]
    # the review at the end of week t (t = -1: the stock the replay starts with) covers weeks t+1 .. t+1+L
    covers = lambda t: slice(t + 1, t + 2 + lead_time)  # noqa: E731
    last = last_week_sales.to_numpy(dtype=np.float64)

    def forecast_policy(level: float) -> dict:
        start = quantile_of_sum(p50[:, covers(-1)], p90[:, covers(-1)], level)
        levels = np.stack([quantile_of_sum(p50[:, covers(t)], p90[:, covers(t)], level) for t in range(horizon)], 1)
        return simulate(demand, levels, start, lead_time)

    out = {"forecast": forecast_policy(service_level), "naive": simulate(demand, None, last * (lead_time + 1), lead_time)}
    out["frontier"] = {f"forecast@{level}": forecast_policy(level) for level in FRONTIER_LEVELS}
    out["frontier"] |= {f"naive@{cover}w": simulate(demand, None, last * cover, lead_time) for cover in NAIVE_COVER}
    return out


def pooled(replays: list[dict[str, dict]]) -> dict[str, dict]:
    """Policies' results over several origins, weighted by units and product-weeks."""
    def pool(parts: list[dict]) -> dict:
        demand = sum(p["demand_units"] for p in parts)
        weeks = sum(p["product_weeks"] for p in parts)
        return {
            "fill_rate": float(sum(p["fill_rate"] * p["demand_units"] for p in parts) / demand) if demand else 1.0,
            "stockout_weeks": sum(p["stockout_weeks"] for p in parts), "product_weeks": weeks,
            "average_on_hand": float(sum(p["average_on_hand"] * p["product_weeks"] for p in parts) / weeks),
            "lost_units": sum(p["lost_units"] for p in parts), "demand_units": demand,
        }

    out = {policy: pool([r[policy] for r in replays]) for policy in ("forecast", "naive")}
    if all("frontier" in r for r in replays):
        out["frontier"] = {k: pool([r["frontier"][k] for r in replays]) for k in replays[0]["frontier"]}
    out["stock_ratio_forecast_over_naive"] = out["forecast"]["average_on_hand"] / max(out["naive"]["average_on_hand"], 1e-12)
    return out
