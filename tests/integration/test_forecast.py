"""The forecast stage end to end on a small synthetic shop with product launches and trends: every
forecaster backtested over Ray (the statistical ones fanned out, the neural one on the one training
loop, with and without the recommender's item vectors), the replenishment replay, the published
forecast, its report, and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.integration.conftest import tiny_config_dict

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def forecast_run(ray_session, tmp_path_factory):
    from recsys import stages
    from recsys.config import load_config

    root = tmp_path_factory.mktemp("forecast")
    raw = tiny_config_dict(root) | {"run_name": "fc"}
    raw["data"]["synthetic"] = {"num_users": 500, "num_items": 60, "days": 245, "launch_share": 0.25,
                                "trend_strength": 0.5, "seed": 3}
    raw["pretrain"] = {"enabled": False}
    raw["search"] = {"enabled": False}
    raw["forecast"] = {"model": "neural", "horizon": 3, "max_horizon": 6, "window_weeks": 8, "series_per_task": 25,
                       "members": 2, "backtest": {"origins": 2, "step_weeks": 3},
                       "train": {"epochs": 3, "batch_size": 64}}
    path = root / "fc.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    dataset = stages.prepare(cfg)
    stages.finetune(cfg, dataset)
    return path, cfg, dataset, stages.forecast(cfg, dataset)


def test_every_forecaster_is_backtested_by_segment(forecast_run):
    _, cfg, _, release = forecast_run
    bt = release.manifest["backtest"]
    assert len(bt["origins"]) == 2
    assert set(bt["models"]) == {"seasonal_naive", "auto_ets", "auto_theta", "lightgbm", "neural", "neural_no_vectors"}
    for name, entry in bt["models"].items():
        m = entry["metrics"]
        assert m["new"]["rows"] > 0, "launches within the horizon are scored"
        assert 0 < m["all"]["wape"] < 5 and 0 <= m["all"]["coverage_p10_p90"] <= 1, name
        assert entry["fit_seconds"] > 0
    # statistical and tree models cannot forecast a product with no history: a named fallback, counted
    assert bt["models"]["auto_ets"]["fallbacks"]["no_history_zero"] == bt["models"]["lightgbm"]["fallbacks"]["no_history_zero"] > 0
    assert "no_history_zero" not in bt["models"]["neural"]["fallbacks"]
    # 35 weeks of history < two seasons of 52: ETS and Theta fall back to non-seasonal, reported
    assert bt["models"]["auto_ets"]["fallbacks"]["season_1_shorter_than_104"] > 0
    rep = bt["replenishment"]
    assert 0 < rep["forecast"]["fill_rate"] <= 1 and 0 < rep["naive"]["fill_rate"] <= 1
    assert rep["forecast"]["demand_units"] == rep["naive"]["demand_units"] > 0


def test_the_published_forecast_covers_every_product_without_crossing(forecast_run):
    _, cfg, dataset, release = forecast_run
    forecast = pd.read_parquet(release.path / "forecasts.parquet")
    history = pd.read_parquet(release.path / "history.parquet")
    assert set(forecast["unique_id"]) >= set(history["unique_id"])
    assert (forecast.groupby("unique_id").size() == cfg.forecast.max_horizon).all()
    assert forecast["ds"].min() == history["ds"].max() + pd.Timedelta(weeks=1)
    q = forecast[["p10", "p50", "p90"]].to_numpy()
    assert (np.diff(q, axis=1) >= 0).all() and (q >= 0).all()
    advice = pd.read_parquet(release.path / "advice.parquet")
    assert (advice["order_up_to"] >= advice["reorder_point"]).all() and (advice["reorder_point"] >= 0).all()
    assert release.manifest["forecaster_path"] and "neural" == release.manifest["model"]


def test_report_writes_the_fan_chart_and_the_backtest_plot(forecast_run, capsys):
    from recsys.cli import main

    path, _, _, release = forecast_run
    assert main(["forecast", "report", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| neural |" in out and "replenishment replay" in out and "protocol: rolling origin" in out
    for name in ("fan_chart.png", "backtest.png"):
        assert (release.path / "report" / name).stat().st_size > 10_000
    assert main(["forecast", "report", "--config", str(path), "--items", "no-such-product"]) == 1


def test_ray_fanout_gives_the_one_process_forecasts(forecast_run):
    """The statistical models fanned out over Ray tasks forecast exactly what one process does."""
    from recsys.forecast.fanout import ray_runner
    from recsys.forecast.models import fit_predict_stats

    _, _, _, release = forecast_run
    history = pd.read_parquet(release.path / "history.parquet")[["unique_id", "ds", "y"]]
    for kind in ("auto_ets", "seasonal_naive"):
        local = fit_predict_stats(kind, history, 3, 1).sort_values(["unique_id", "ds"]).reset_index(drop=True)
        fanned = ray_runner(7)(kind, history, 3, 1).sort_values(["unique_id", "ds"]).reset_index(drop=True)
        assert len(local) == 3 * history["unique_id"].nunique()
        pd.testing.assert_frame_equal(local, fanned)
