"""The statistical baselines over Ray: series cut into groups of `series_per_task`, each group one
Ray task running statsforecast in its own process (one CPU each), so thousands of per-series fits
use every core of every node. Same models, same results as in one process (`fit_predict_stats`):
each series is fitted on its own."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from recsys.forecast.models import fit_predict_stats


def _groups(history: pd.DataFrame, series_per_task: int) -> list[pd.DataFrame]:
    ids = history["unique_id"].unique()
    cuts = [ids[i:i + series_per_task] for i in range(0, len(ids), series_per_task)]
    codes = pd.Series(np.arange(len(ids)) // series_per_task, index=ids)
    by = history.groupby(history["unique_id"].map(codes).to_numpy())
    return [by.get_group(g) for g in range(len(cuts))]


def fan_out(kinds: tuple[str, ...], history: pd.DataFrame, horizon: int, season: int, series_per_task: int,
            cpus_per_task: float = 1.0) -> dict:
    """kind → its forecasts of every series, all kinds' tasks in flight at once (no wait between
    models); each group of series goes to the object store once and serves every kind."""
    import ray

    remote = ray.remote(num_cpus=cpus_per_task)(fit_predict_stats)
    parts = [ray.put(part) for part in _groups(history, series_per_task)]
    refs = {kind: [remote.remote(kind, part, horizon, season) for part in parts] for kind in kinds}
    return {kind: pd.concat(ray.get(r), ignore_index=True) for kind, r in refs.items()}


def ray_runner(series_per_task: int, cpus_per_task: float = 1.0):
    """A `run(kind, history, horizon, season)` for StatsModel that fans out over Ray tasks."""

    def run(kind: str, history: pd.DataFrame, horizon: int, season: int) -> pd.DataFrame:
        return fan_out((kind,), history, horizon, season, series_per_task, cpus_per_task)[kind]

    return run


def fanout_speed(history: pd.DataFrame, kinds: tuple[str, ...], horizon: int, series_per_task: int,
                 cpus_per_task: float = 1.0) -> dict:
    """series/s of the same statsforecast fits in this one process and fanned out over Ray. Both are
    warmed up first, the fan-out on as many tasks as the cluster has CPUs, so that starting worker
    processes and importing statsforecast in them is not what is measured."""
    import ray

    slots = max(1, int(ray.cluster_resources().get("CPU", 1) / cpus_per_task))
    sample = history[history["unique_id"].isin(history["unique_id"].unique()[: 5 * slots])]
    warm = ray_runner(5, cpus_per_task)
    for kind in kinds:
        fit_predict_stats(kind, sample, horizon, 1)
        warm(kind, sample, horizon, 1)
    n = history["unique_id"].nunique()
    out = {"series": int(n), "models": list(kinds), "series_per_task": series_per_task, "cpus_per_task": cpus_per_task}
    t0 = time.perf_counter()
    local = pd.concat([fit_predict_stats(kind, history, horizon, 1) for kind in kinds])
    out["one_process_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fanned = pd.concat(list(fan_out(kinds, history, horizon, 1, series_per_task, cpus_per_task).values()))
    out["ray_seconds"] = time.perf_counter() - t0
    key = ["unique_id", "ds"]
    a = local.sort_values(key, kind="stable").reset_index(drop=True)[["p50"]].to_numpy()
    b = fanned.sort_values(key, kind="stable").reset_index(drop=True)[["p50"]].to_numpy()
    out["max_abs_difference"] = float(np.nanmax(np.abs(a - b))) if len(a) == len(b) else float("inf")
    out["one_process_series_per_s"] = n * len(kinds) / out["one_process_seconds"]
    out["ray_series_per_s"] = n * len(kinds) / out["ray_seconds"]
    out["speedup"] = out["one_process_seconds"] / out["ray_seconds"]
    return out
