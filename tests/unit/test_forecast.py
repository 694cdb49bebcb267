"""Demand forecasting's pieces on hand-made data: the series builder, quantiles that never cross,
the replenishment simulator against a hand-computed replay, the metrics, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.config import ConfigError, validate_config
from recsys.eval.metrics import forecast_metrics
from recsys.forecast.backtest import backtest_origins
from recsys.forecast.models import ForecastProblem, finalise
from recsys.forecast.neural import QuantileForecastNet
from recsys.forecast.replenish import advice, quantile_of_sum, simulate
from recsys.forecast.series import build_series, sales_lines_from_invoice_log


def line(item, when, qty, customer="c1", kind="sale", price=2.0):
    return {"item_id": item, "timestamp": pd.Timestamp(when, tz="UTC"), "quantity": qty, "unit_price": price,
            "customer_id": customer, "kind": kind}


# 2024-01-01 is a Monday. The log runs Wed 2023-12-27 .. Thu 2024-02-01: whole weeks are the four
# from 2024-01-01 to 2024-01-22 (the first and the last week are partial and left out).
LINES = pd.DataFrame([
    line("A", "2023-12-27 10:00", 5),                    # partial first week: not counted
    line("A", "2024-01-02 10:00", 3),                    # week 1
    line("A", "2024-01-03 10:00", 4, customer=None),     # week 1, a guest checkout: counted
    line("A", "2024-01-16 09:00", 10, customer="c2"),    # week 3
    line("A", "2024-01-17 09:00", -4, customer="c2", kind="cancellation"),  # nets 4 off week 3's sale
    line("A", "2024-01-18 09:00", -50, customer="c2", kind="cancellation"),  # at most the sale's remaining 6
    line("A", "2024-01-18 10:00", -2, customer="c9", kind="cancellation"),   # no sale of A to c9: unlinked
    line("B", "2024-01-23 12:00", 7),                    # week 4 (B's first sale)
    line("B", "2024-02-01 12:00", 9),                    # partial last week: not counted
    line("B", "2024-01-24 12:00", -3, kind="sale"),      # a negative sale: refused
    line("B", "2024-01-24 13:00", None, kind="sale"),    # a missing quantity: refused
])


def test_series_fill_zero_weeks_count_guests_and_net_linked_cancellations():
    series = build_series(LINES, "W")
    a = series.frame[series.frame["unique_id"] == "A"].set_index("ds")["y"]
    assert list(a.index.strftime("%Y-%m-%d")) == ["2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22"]
    assert list(a) == [7.0, 0.0, 0.0, 0.0]  # 3 + the guest's 4; week 3's 10 units all cancelled (4 + 6 of 50)
    b = series.frame[series.frame["unique_id"] == "B"]
    assert list(b["ds"].dt.strftime("%Y-%m-%d")) == ["2024-01-22"] and list(b["y"]) == [7.0]  # starts at its first sale
    r = series.report
    assert r["guest_sale_lines"] == 1 and r["cancellation_lines"] == 3
    assert r["cancellation_lines_linked"] == 2 and r["cancellation_lines_unlinked"] == 1 and r["cancelled_units_netted"] == 10
    assert r["refused"] == {"missing_quantity": 1, "non_positive_quantity": 1}
    assert r["periods"] == 4 and r["units"] == 14.0
    assert series.frame.loc[series.frame["unique_id"] == "A", "revenue"].iloc[0] == pytest.approx(14.0)


def test_actuals_cover_new_products_with_zeros_before_launch():
    series = build_series(LINES, "W")
    actual = series.actuals(pd.Timestamp("2024-01-15"), 2)
    b = actual[actual["unique_id"] == "B"]
    assert list(b["y"]) == [0.0, 7.0]  # B launches in the horizon's second week
    assert set(series.history(pd.Timestamp("2024-01-15"))["unique_id"]) == {"A"}


def test_invoice_log_lines_keep_guest_sales_and_product_cancellations_only():
    raw = pd.DataFrame({
        "invoice": ["1", "2", "C3", "C4", "5"], "item_id": ["85123A", "22423", "85123A", "POST", "22423"],
        "quantity": [2, 1, -1, -1, 0], "unit_price": [1.0] * 5, "timestamp": pd.to_datetime(["2024-01-02"] * 5, utc=True),
        "customer_id": ["7", "", "7", "7", "7"], "reason": [None, "no_customer", "cancellation", "cancellation", "non_positive_quantity"],
    })
    lines = sales_lines_from_invoice_log(raw)
    assert list(lines["kind"]) == ["sale", "sale", "cancellation"]
    assert lines["customer_id"].isna().tolist() == [False, True, False]


def test_series_builder_names_missing_columns_and_empty_sales():
    with pytest.raises(ValueError, match=r"lack the columns \['kind'\]"):
        build_series(LINES.drop(columns="kind"))
    with pytest.raises(ValueError, match="no sale lines"):
        build_series(LINES[LINES["kind"] == "cancellation"])


def problem(ids=("A", "B"), new=("N",), horizon=3) -> ForecastProblem:
    ds = pd.date_range("2024-01-01", periods=4, freq="W-MON")
    history = pd.DataFrame({"unique_id": np.repeat(ids, 4), "ds": np.tile(ds, len(ids)), "y": 1.0})
    calendar = pd.DataFrame({"ds": pd.date_range("2024-01-01", periods=10, freq="W-MON"), "week_of_year": 1, "holidays": 0})
    return ForecastProblem(history, pd.Timestamp("2024-01-29"), horizon, list(new), calendar, 52, 4)


def test_finalise_sorts_crossed_quantiles_clips_negatives_and_names_the_zero_fallback():
    p = problem()
    rng = np.random.default_rng(0)
    raw = pd.DataFrame({"unique_id": np.repeat(["A", "B"], 3), "ds": np.tile(p.future, 2),
                        "p10": rng.normal(size=6) * 5, "p50": rng.normal(size=6) * 5, "p90": rng.normal(size=6) * 5})
    raw.loc[0, "p90"] = np.nan  # an interval statsforecast could not form
    fallbacks = {}
    out = finalise(raw, p, fallbacks)
    assert len(out) == 9 and set(out["unique_id"]) == {"A", "B", "N"}
    q = out[["p10", "p50", "p90"]].to_numpy()
    assert (np.diff(q, axis=1) >= 0).all() and (q >= 0).all()
    assert (out.loc[out["unique_id"] == "N", ["p10", "p50", "p90"]] == 0).all().all()
    assert fallbacks == {"no_history_zero": 1}


def test_the_network_cannot_cross_its_quantiles():
    torch.manual_seed(0)
    net = QuantileForecastNet(window=6, max_horizon=4, vector_dim=5, hidden=16, members=3).eval()
    out = net(torch.randn(64, 6) * 3, torch.randn(64, 12), torch.randn(64, 6), torch.randn(64, 12), torch.randn(64, 5))
    assert out.shape == (64, 4, 3)
    assert (out[..., 0] <= out[..., 1]).all() and (out[..., 1] <= out[..., 2]).all()


def test_simulator_replays_a_hand_computed_case():
    # One product, lead time 1: an order at the end of week t arrives at the start of week t + 2.
    demand = np.array([[5.0, 5.0, 8.0, 2.0]])
    levels = np.array([[10.0, 10.0, 10.0, 10.0]])
    got = simulate(demand, levels, start=np.array([10.0]), lead_time=1)
    # week 0: on hand 10, sell 5 → 5; order 10 − 5 − 0 = 5 (arrives week 2)
    # week 1: sell 5 → 0; on order 5: order 10 − 0 − 5 = 5 (arrives week 3)
    # week 2: +5 → 5, demand 8: sell 5, lose 3 → 0; order 10 − 0 − 5 = 5 (week 4)
    # week 3: +5 → 5, sell 2 → 3
    assert got["fill_rate"] == pytest.approx(17 / 20)
    assert got["lost_units"] == 3 and got["stockout_weeks"] == 1
    assert got["average_on_hand"] == pytest.approx(((10 + 5) / 2 + (5 + 0) / 2 + (5 + 0) / 2 + (5 + 3) / 2) / 4)
    naive = simulate(demand, None, start=np.array([10.0]), lead_time=1)
    # naive: orders what sold (5, 5, 8, 2); arrivals week 2: 5, week 3: 5
    # w0 10→5, w1 5→0, w2 +5 → 5, demand 8: sell 5 lose 3 → 0, w3 +5 → 5 sell 2 → 3
    assert naive["fill_rate"] == pytest.approx(17 / 20)


def test_order_up_to_is_the_service_quantile_of_the_covered_weeks():
    p50, p90 = np.array([[10.0, 10.0, 10.0]]), np.array([[10.0, 10.0, 10.0]])
    assert quantile_of_sum(p50, p90, 0.95).tolist() == [30.0]  # no spread: the sum itself
    spread = np.array([[12.8155, 12.8155]])  # σ = 2.8155 / 1.28155 ≈ 2.197 per week
    got = quantile_of_sum(np.array([[10.0, 10.0]]), spread, 0.95)
    assert got.tolist() == [float(np.ceil(20 + 1.6449 * np.sqrt(2) * 2.8155 / 1.28155))]
    levels = advice(np.array([[10.0, 10.0, 10.0]]), np.array([[10.0, 10.0, 10.0]]), 0.95, lead_time=2)
    assert levels["reorder_point"].tolist() == [20.0] and levels["order_up_to"].tolist() == [30.0]
    with pytest.raises(ValueError, match="needs 3 forecast weeks"):
        advice(np.ones((1, 2)), np.ones((1, 2)), 0.95, lead_time=2)


def test_forecast_metrics_on_a_hand_case():
    rows = pd.DataFrame({"unique_id": ["a", "a", "b", "b"], "y": [10.0, 0.0, 4.0, 6.0], "p10": [5.0, 0.0, 5.0, 5.0],
                         "p50": [8.0, 1.0, 5.0, 5.0], "p90": [12.0, 2.0, 9.0, 9.0], "scale": [2.0, 2.0, 0.0, 0.0]})
    m = forecast_metrics(rows)
    assert m["wape"] == pytest.approx((2 + 1 + 1 + 1) / 20)
    assert m["mase"] == pytest.approx(((2 + 1) / 2) / 2) and m["mase_series"] == 1  # b has no scale
    assert m["coverage_p10_p90"] == pytest.approx(3 / 4)  # b's 4 is below its P10 of 5


def test_forecast_config_refuses_bad_horizons_and_unknown_countries():
    with pytest.raises(ConfigError, match=r"forecast: .*horizon \(8\) must be ≤ max_horizon \(4\)"):
        validate_config({"forecast": {"horizon": 8, "max_horizon": 4}})
    with pytest.raises(ConfigError, match="lead_time_weeks"):
        validate_config({"forecast": {"max_horizon": 2, "horizon": 2, "replenishment": {"lead_time_weeks": 2}}})
    with pytest.raises(ConfigError, match="holiday_country 'XX'"):
        validate_config({"forecast": {"holiday_country": "XX"}})
    with pytest.raises(ConfigError, match="forecast.train.enabled: not a setting"):
        validate_config({"forecast": {"train": {"enabled": True}}})


def test_backtest_origins_step_back_from_the_last_whole_horizon():
    series = build_series(pd.DataFrame([line("A", f"2024-0{m}-0{d} 10:00", 1) for m in (1, 2, 3) for d in (2, 9)]))
    origins = backtest_origins(series, horizon=2, origins=2, step_weeks=1)
    last = series.periods[-2]
    assert origins == [last - pd.Timedelta(weeks=1), last]
    with pytest.raises(ValueError, match="last_origin 2030-01-07 must be a period start"):
        backtest_origins(series, 2, 1, 1, last_origin=pd.Timestamp("2030-01-07"))


def test_network_inputs_know_a_new_products_launch_week_and_no_future():
    from recsys.forecast.neural import ForecastArrays

    p = problem(new=("N",), horizon=3)
    p.history.loc[p.history["unique_id"] == "B", "y"] = [0.0, 2.0, 0.0, 5.0]
    p.launches = {"N": p.origin + pd.Timedelta(weeks=2)}
    arrays = ForecastArrays.of(p, max_horizon=3, vectors=None)
    rows = np.arange(len(arrays.ids))
    got = arrays.inputs(rows, np.full(len(rows), arrays.units.shape[1]))
    by_id = dict(zip(arrays.ids, range(len(rows)), strict=True))
    until = got["scalars"][:, 5].numpy()
    assert until[by_id["N"]] == pytest.approx(2 / 3) and until[by_id["A"]] == 0.0  # N goes on sale in 2 weeks
    assert got["window"][by_id["N"]].abs().sum() == 0  # no history
    assert got["window"][by_id["B"], -1].item() == pytest.approx(np.log1p(5.0))  # the last week before the origin
    target, inside = arrays.targets(rows, np.full(len(rows), arrays.units.shape[1] - 1))
    assert inside[:, 0].all() and not inside[:, 1:].any()  # weeks past the history never enter the loss


def test_history_at_an_origin_does_not_see_later_cancellations():
    lines = pd.DataFrame([
        line("A", "2024-01-01 10:00", 8),                                    # week 1 (the log starts on its Monday)
        line("A", "2024-01-24 10:00", -8, kind="cancellation"),             # cancelled in week 4
        line("A", "2024-01-30 10:00", 1),
        line("A", "2024-02-06 10:00", 1),
    ])
    series = build_series(lines)
    assert series.frame.loc[series.frame["ds"] == pd.Timestamp("2024-01-01"), "y"].item() == 0.0  # netted in the end
    before = series.history(pd.Timestamp("2024-01-15"))
    week1 = before[before["ds"] == pd.Timestamp("2024-01-01")]
    assert week1["y"].item() == 8.0 and week1["orders"].item() == 1.0  # the cancellation has not happened yet
    after = series.history(pd.Timestamp("2024-01-29"))
    assert after.loc[after["ds"] == pd.Timestamp("2024-01-01"), "y"].item() == 0.0
