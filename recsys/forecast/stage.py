"""The forecast stage: the sales series of a prepared dataset, a rolling-origin backtest of every
forecaster (and of the replenishment policies on the default one), then the default forecaster
fitted on the whole history and published as a ForecastRelease that `/forecast` serves.

    recsys forecast --config FILE            (python ray_jobs/forecast.py --config FILE)
    recsys forecast report --config FILE     the fan chart and the backtest plot (recsys/forecast/report.py)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys.artifacts import ArtifactStore, Dataset, ForecastRelease
from recsys.config import RecsysConfig
from recsys.forecast.backtest import PROTOCOL, backtest_origins, problem_at, run_backtest
from recsys.forecast.models import STAT_MODELS, ForecastProblem, finalise
from recsys.forecast.neural import ItemVectors
from recsys.forecast.registry import make_forecaster
from recsys.forecast.replenish import advice, pooled, replay
from recsys.forecast.series import (
    SalesSeries,
    build_series,
    extend_calendar,
    sales_lines_from_events,
    sales_lines_from_invoice_log,
)

NO_VECTORS = "neural_no_vectors"
# In the published version's key: bumped when the same inputs give other published numbers.
RELEASE_FORMAT = 2  # 2: P10 and P90 in whole units


def load_sales(cfg: RecsysConfig, dataset: Dataset) -> tuple[SalesSeries, pd.DataFrame]:
    """(weekly series, unique_id → price) of the dataset's source: the raw invoice lines when the
    source has them (guest sales and cancellations), else its purchase events."""
    lines_path = (dataset.manifest.get("source_quarantine") or {}).get("lines")
    if lines_path and Path(lines_path).is_file():
        lines = sales_lines_from_invoice_log(pq.read_table(lines_path))
    else:
        catalog = pq.read_table(dataset.manifest["source"]["catalog"]).to_pandas()
        lines = sales_lines_from_events(dataset.read_split("events"), catalog)
    series = build_series(lines, "W", cfg.forecast.holiday_country)
    sold = lines[lines["kind"] == "sale"]
    price = sold.groupby("item_id")["unit_price"].median()
    static = pd.DataFrame({"unique_id": price.index.astype(str), "price": price.to_numpy(dtype=float)})
    return series, static


def item_vectors(cfg: RecsysConfig, dataset: Dataset) -> ItemVectors | None:
    """The recommender's item vectors (the latest fine-tuned model on this dataset): each product's
    content vector (attributes + projected title text), for cold products too; an id-only model
    gives its trained items' full vectors. None when no fine-tuned model is published."""
    import torch

    from recsys.eval.segments import cold_text_for
    from recsys.models import SeqRecModel

    export = ArtifactStore.of(cfg).latest("finetune", trained_on=dataset, required=False)
    if export is None:
        return None
    model = SeqRecModel.from_pretrained(export.path).eval()
    items, cold = dataset.items(), dataset.cold_items()
    with torch.no_grad():
        table = model.items.content_table() if model.items.has_content else model.items.catalog()
        known = table[torch.as_tensor(items["item_index"].to_numpy(), dtype=torch.long)].float().numpy()
        ids, rows = list(items["item_id"]), [known]
        if len(cold) and model.items.has_content:
            attrs = torch.as_tensor(dataset.cold_attribute_matrix(model.config.max_attributes_per_item))
            text = cold_text_for(cfg, model, dataset)
            text = torch.as_tensor(text, dtype=torch.float32) if text is not None else None
            rows.append(model.items.content(attrs, text).float().numpy())
            ids += list(cold["item_id"])
    return ItemVectors([str(i) for i in ids], np.concatenate(rows).astype(np.float32), source=export.version)


def neural_trainer(cfg: RecsysConfig, dataset: Dataset):
    """task → the exported network's folder, trained by the one loop (its own resumable run)."""
    from recsys.train.trainer import fit_and_publish

    return lambda task: fit_and_publish(cfg, task, dataset).model_path


def forecasters(cfg: RecsysConfig, dataset: Dataset, vectors: ItemVectors | None, names: list[str] | None = None) -> dict:
    """name → a factory of a fresh forecaster, for every forecaster the backtest compares (or `names`)."""
    from recsys.forecast.fanout import ray_runner

    fc = cfg.forecast
    neural = {"train": neural_trainer(cfg, dataset), "max_horizon": fc.max_horizon, "stage_cfg": fc.train,
              "world": cfg.cluster.train_workers, "key": {"dataset": str(dataset.path)},
              "network": {"hidden": fc.hidden_size, "dropout": fc.dropout, "vector_width": fc.vector_width,
                          "members": fc.members},
              "volume_weight": fc.volume_weight, "vector_dropout": fc.vector_dropout}
    run = ray_runner(fc.series_per_task, fc.cpus_per_task)
    table = {name: (lambda name=name: make_forecaster(name, run=run)) for name in STAT_MODELS}
    table["lightgbm"] = lambda: make_forecaster("lightgbm", seed=fc.train.seed)
    with_vectors = vectors if fc.item_vectors else None
    table["neural"] = lambda: make_forecaster("neural", vectors=with_vectors, **neural)
    if vectors is not None and fc.item_vectors:
        table[NO_VECTORS] = lambda: make_forecaster("neural", vectors=None, **neural)
    unknown = sorted(set(names or []) - set(table))
    if unknown:
        raise ValueError(f"no forecaster {unknown} here; the choices are {', '.join(table)} ({NO_VECTORS} needs a "
                         "fine-tuned recommender on this dataset and forecast.item_vectors: true)")
    return {n: table[n] for n in (names or table)}


def backtest(cfg: RecsysConfig, dataset: Dataset, series: SalesSeries, static: pd.DataFrame,
             vectors: ItemVectors | None, names: list[str] | None = None, log=print) -> dict:
    """Every forecaster at the configured origins, and the replenishment replay of the default one."""
    fc = cfg.forecast
    origins = backtest_origins(series, fc.horizon, fc.backtest.origins, fc.backtest.step_weeks, fc.backtest.last_origin)
    calendar = extend_calendar(series.calendar, fc.max_horizon, series.freq, fc.holiday_country)
    lead = fc.replenishment.lead_time_weeks
    result = run_backtest(series, forecasters(cfg, dataset, vectors, names), origins, fc.horizon, fc.season_length,
                          fc.window_weeks, static, calendar=calendar, predict_horizon=fc.horizon + lead + 1, log=log)
    replays = []
    for origin in origins:
        forecast = result["forecasts"][fc.model][origin]
        history = series.history(origin)
        last = history[history["ds"] == history["ds"].max()].set_index("unique_id")["y"]
        replays.append(replay(forecast, series.actuals(origin, fc.horizon), last, fc.horizon, fc.replenishment.service_level, lead))
    result["replenishment"] = pooled(replays) | {"model": fc.model, "service_level": fc.replenishment.service_level,
                                                 "lead_time_weeks": lead}
    return result


def final_problem(cfg: RecsysConfig, series: SalesSeries, static: pd.DataFrame, catalog_ids: list[str]) -> ForecastProblem:
    """The forecast after the last whole week: every product sold, and the catalog's unsold ones."""
    fc = cfg.forecast
    origin = series.periods[-1] + pd.Timedelta(weeks=1)
    calendar = extend_calendar(series.calendar, fc.max_horizon, series.freq, fc.holiday_country)
    problem = problem_at(series, origin, fc.max_horizon, fc.season_length, fc.window_weeks, static, calendar=calendar)
    sold = set(series.frame["unique_id"])
    problem.new_ids = sorted(set(catalog_ids) - sold) if cfg.forecast.model == "neural" else []
    return problem


def run_forecast(cfg: RecsysConfig, dataset: Dataset, log=print) -> ForecastRelease:
    fc = cfg.forecast
    if not fc.enabled:
        raise ValueError("forecast.enabled is false: set it to true to run the forecast stage")
    series, static = load_sales(cfg, dataset)
    log(f"sales series: {series.report['products']} products × {series.report['periods']} weeks "
        f"({series.report['first_period']}..{series.report['last_period']})")
    vectors = item_vectors(cfg, dataset) if fc.item_vectors else None
    if fc.model == "neural" and fc.item_vectors and vectors is None:
        log("no fine-tuned recommender on this dataset: the neural forecaster runs without item vectors")
    report = backtest(cfg, dataset, series, static, vectors, log=log) if fc.backtest.enabled else None

    catalog_ids = list(pq.read_table(dataset.manifest["source"]["catalog"], columns=["item_id"])["item_id"].to_pylist())
    problem = final_problem(cfg, series, static, catalog_ids)
    model = forecasters(cfg, dataset, vectors, [fc.model])[fc.model]()
    model.fit(problem)
    forecast = finalise(model.predict(problem), problem, model.fallbacks)
    forecast["step"] = forecast.groupby("unique_id").cumcount() + 1
    wide = {q: forecast.pivot(index="unique_id", columns="step", values=q) for q in ("p50", "p90")}
    lead = fc.replenishment.lead_time_weeks
    levels = advice(wide["p50"].to_numpy(), wide["p90"].to_numpy(), fc.replenishment.service_level, lead)
    advice_frame = pd.DataFrame({"unique_id": wide["p50"].index, **levels})
    return publish(cfg, dataset, series, forecast, advice_frame, report, model, problem)


def _summary(report: dict | None) -> dict | None:
    if report is None:
        return None
    return {"origins": report["origins"], "protocol": report["protocol"], "replenishment": report["replenishment"],
            "models": report["models"]}


def publish(cfg, dataset, series, forecast, advice_frame, report, model, problem) -> ForecastRelease:
    fc = cfg.forecast
    key = json.dumps({"format": RELEASE_FORMAT, "dataset": str(dataset.path), "forecast": fc.model_dump(mode="json"),
                      "model": str(getattr(model, "export_path", "")), "origin": str(problem.origin.date())}, sort_keys=True)
    version = f"{problem.origin.date()}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    summary = _summary(report)
    manifest = {
        "version": version, "model": fc.model, "origin": str(problem.origin.date()), "max_horizon": fc.max_horizon,
        "horizon": fc.horizon, "quantiles": ["p10", "p50", "p90"], "freq": "W-MON",
        "dataset_path": str(dataset.path), "forecaster_path": str(getattr(model, "export_path", "") or "") or None,
        "fallbacks": model.fallbacks, "series": series.report, "products": int(forecast["unique_id"].nunique()),
        "replenishment": fc.replenishment.model_dump(mode="json"), "protocol": PROTOCOL,
        "backtest": summary, "config": cfg.model_dump(mode="json"),
    }

    def write(folder: Path) -> None:
        forecast.to_parquet(folder / "forecasts.parquet", index=False)
        advice_frame.to_parquet(folder / "advice.parquet", index=False)
        series.frame.to_parquet(folder / "history.parquet", index=False)
        if report is not None:
            report["rows"].to_parquet(folder / "backtest_rows.parquet", index=False)

    return ArtifactStore.of(cfg).publish_forecast(version, manifest, write)
