"""The global neural forecaster: one network for every product, trained with the platform's one
training loop (recsys.train.loop: Ray Train + DeepSpeed ZeRO, resume, checkpoints), pinball loss
on P10/P50/P90 of the next `max_horizon` weeks.

Inputs of one (product, origin) example, all known at the origin:
- the last `window` weeks of log1p(units) (zeros before the product's first sale) and their mean,
  of log1p(orders) (sale lines: how many customers bought, smoother than units, which a few large
  orders make lumpy), and of the whole shop's log1p(units) less their mean (the season's shape);
- the product's age in weeks (0 and a "no history" flag for one not sold yet, with the weeks until
  it goes on sale), its log price;
- the calendar of each target week (week of year as sine/cosine, public holidays);
- optionally the recommender's item vector (`ItemVectors`: the model's content vector — attributes
  and projected title text — so a product launched after the cut, with no sales at all, is
  forecast from what it is). `forecast.item_vectors: false` is the same network without it.

Outputs: per target week, P50 and two non-negative gaps (softplus) below and above it, in log1p
space: P10 ≤ P50 ≤ P90 by construction. Training examples: every (product, week) anchor from
`horizon − 1` weeks before the product's first sale (the "launches within the horizon" examples a
new product's forecast learns from) to the last history week; target weeks past the history are
masked out of the loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from recsys.eval.metrics import QUANTILES
from recsys.forecast.models import Forecaster, ForecastProblem
from recsys.train.task import TrainTask

STAGE = "forecaster"
MAX_AGE = 52.0
# In the run key: a change of the network's inputs or of how it trains (bump RECIPE) starts a new
# run instead of resuming a checkpoint of another shape or recipe.
RECIPE = 2  # 2: vector dropout only on examples with a history
INPUTS = ("units_window", "orders_window", "shop_window", "age", "known", "log_price", "window_mean", "has_vector",
          "weeks_to_launch", "calendar_sin_cos_holidays", "vector")


@dataclass
class ItemVectors:
    """Product id → the recommender's item vector (zeros and has_vector 0 for a product it lacks)."""

    ids: list[str]
    matrix: np.ndarray  # (n, D) float32
    source: str = ""

    def lookup(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        where = {item: row for row, item in enumerate(self.ids)}
        rows = np.array([where.get(i, -1) for i in ids])
        out = np.zeros((len(ids), self.matrix.shape[1]), dtype=np.float32)
        out[rows >= 0] = self.matrix[rows[rows >= 0]]
        return out, (rows >= 0).astype(np.float32)


def calendar_features(calendar: pd.DataFrame) -> np.ndarray:
    """(periods, 3): sin and cos of the week of year, public holidays in the week."""
    angle = 2 * np.pi * (calendar["week_of_year"].to_numpy(dtype=np.float64) - 1) / 52.0
    return np.stack([np.sin(angle), np.cos(angle), calendar["holidays"].to_numpy(dtype=np.float64)], 1).astype(np.float32)


@dataclass
class ForecastArrays:
    """A forecast problem as arrays: the network's inputs for any (product, anchor) pair."""

    ids: list[str]
    units: np.ndarray  # (P, T) log1p units before the origin, zeros before the first sale
    orders: np.ndarray  # (P, T) log1p sale lines (orders) per week: smoother than units, which big orders make lumpy
    shop: np.ndarray  # (T,) log1p of the whole shop's weekly units: the season every product shares
    launch: np.ndarray  # (P,) first sale's period index (T + weeks to its launch for a product not sold yet)
    price: np.ndarray  # (P,) log1p price
    vectors: np.ndarray | None  # (P, D) item vectors
    has_vector: np.ndarray  # (P,)
    calendar: np.ndarray  # (T + max_horizon, 3)
    window: int
    max_horizon: int

    @classmethod
    def of(cls, problem: ForecastProblem, max_horizon: int, vectors: ItemVectors | None) -> ForecastArrays:
        periods = pd.DatetimeIndex(sorted(problem.calendar["ds"][problem.calendar["ds"] < problem.origin]))
        ids = sorted(set(problem.history["unique_id"]) | set(problem.new_ids))
        table = problem.history.pivot(index="unique_id", columns="ds", values="y").reindex(index=ids, columns=periods)
        first = problem.history.groupby("unique_id")["ds"].min().reindex(ids)
        step = pd.Timedelta(weeks=1)
        launch = np.array([periods.get_loc(d) if pd.notna(d) else
                           len(periods) + max(0, int((problem.launches.get(i, problem.origin) - problem.origin) / step))
                           for i, d in zip(ids, first, strict=True)], dtype=np.int64)
        prices = problem.static.set_index("unique_id")["price"].reindex(ids) if problem.static is not None else None
        calendar = problem.calendar.set_index("ds").reindex(
            pd.date_range(periods[0], periods=len(periods) + max_horizon, freq=problem.freq))
        if calendar.isna().any().any():
            raise ValueError(f"the calendar does not cover {max_horizon} periods after {problem.origin.date()}")
        vec, has = vectors.lookup(ids) if vectors is not None else (None, np.zeros(len(ids), dtype=np.float32))
        units = np.clip(table.fillna(0.0).to_numpy(dtype=np.float32), 0, None)
        if "orders" in problem.history:
            orders = problem.history.pivot(index="unique_id", columns="ds", values="orders").reindex(index=ids, columns=periods)
            orders = np.log1p(np.clip(orders.fillna(0.0).to_numpy(dtype=np.float32), 0, None))
        else:
            orders = np.log1p(np.minimum(units, 1.0))
        return cls(ids, np.log1p(units), orders, np.log1p(units.sum(0)), launch,
                   np.log1p(prices.fillna(0.0).to_numpy(dtype=np.float32)) if prices is not None else np.zeros(len(ids), np.float32),
                   vec, has, calendar_features(calendar.reset_index(names="ds")), problem.window, max_horizon)

    def inputs(self, rows: np.ndarray, anchors: np.ndarray) -> dict[str, torch.Tensor]:
        """Features of products `rows` at period indices `anchors` (the first target period)."""
        lags = anchors[:, None] - self.window + np.arange(self.window)[None, :]
        inside = lags >= 0
        window = np.where(inside, self.units[rows[:, None], np.clip(lags, 0, None)], 0.0)
        orders = np.where(inside, self.orders[rows[:, None], np.clip(lags, 0, None)], 0.0)
        shop = np.where(inside, self.shop[np.clip(lags, 0, None)], np.nan)
        shop = np.nan_to_num(shop - np.nanmean(shop, axis=1, keepdims=True), nan=0.0)  # the shop's recent shape
        age = anchors - self.launch[rows]
        known = (age > 0).astype(np.float32)
        until = np.clip(-age, 0, self.max_horizon) / self.max_horizon  # weeks until a new product goes on sale
        scalars = np.stack([np.clip(age, 0, MAX_AGE) / MAX_AGE, known, self.price[rows], window.mean(1), self.has_vector[rows],
                            until], 1)
        steps = anchors[:, None] + np.arange(self.max_horizon)[None, :]
        out = {"window": torch.from_numpy(window.astype(np.float32)),
               "context": torch.from_numpy(np.concatenate([orders, shop], 1).astype(np.float32)),
               "scalars": torch.from_numpy(scalars.astype(np.float32)),
               "calendar": torch.from_numpy(self.calendar[steps].reshape(len(rows), -1))}
        if self.vectors is not None:
            out["vector"] = torch.from_numpy(self.vectors[rows])
        return out

    def examples(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, anchors) of every training example (module docstring)."""
        periods = self.units.shape[1]
        rows, anchors = [], []
        for row, launch in enumerate(self.launch):
            start = max(1, launch - horizon + 1)
            if start < periods:
                anchors.append(np.arange(start, periods))
                rows.append(np.full(periods - start, row))
        return np.concatenate(rows), np.concatenate(anchors)

    def targets(self, rows: np.ndarray, anchors: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        steps = anchors[:, None] + np.arange(self.max_horizon)[None, :]
        inside = steps < self.units.shape[1]
        values = np.where(inside, self.units[rows[:, None], np.clip(steps, 0, self.units.shape[1] - 1)], 0.0)
        return torch.from_numpy(values.astype(np.float32)), torch.from_numpy(inside)


class _Member(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float, max_horizon: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 3 * max_horizon))

    def forward(self, x: torch.Tensor, level: torch.Tensor, max_horizon: int) -> torch.Tensor:
        raw = self.body(x).view(-1, max_horizon, 3)
        median = raw[..., 0] + level  # a residual on the recent level
        return torch.stack([median - F.softplus(raw[..., 1]), median, median + F.softplus(raw[..., 2])], -1)


class QuantileForecastNet(nn.Module):
    """`members` MLPs over the window, context, scalars, calendar (and item vector), trained side by
    side, each on its own loss → (members, B, max_horizon, 3) log1p quantiles in training; the
    forecast is their mean (a mean of sorted triples stays sorted)."""

    def __init__(self, window: int, max_horizon: int, vector_dim: int, hidden: int = 256, dropout: float = 0.1,
                 vector_width: int = 8, members: int = 1):
        super().__init__()
        self.settings = {"window": window, "max_horizon": max_horizon, "vector_dim": vector_dim, "hidden": hidden,
                         "dropout": dropout, "vector_width": vector_width, "members": members}
        self.vector = nn.Sequential(nn.Linear(vector_dim, vector_width), nn.GELU()) if vector_dim else None
        width = 3 * window + 6 + 3 * max_horizon + (vector_width if vector_dim else 0)
        self.members = nn.ModuleList(_Member(width, hidden, dropout, max_horizon) for _ in range(members))
        self.max_horizon = max_horizon

    def forward(self, window, context, scalars, calendar, vector=None, every_member: bool = False) -> torch.Tensor:
        parts = [window, context, scalars, calendar] + ([self.vector(vector)] if self.vector is not None else [])
        x, level = torch.cat(parts, 1), window[:, -4:].mean(1, keepdim=True)
        out = torch.stack([m(x, level, self.max_horizon) for m in self.members])
        return out if every_member else out.mean(0)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), folder / "forecaster.pt")
        (folder / "forecaster.json").write_text(json.dumps(self.settings))

    @classmethod
    def load(cls, folder: str | Path) -> QuantileForecastNet:
        folder = Path(folder)
        net = cls(**json.loads((folder / "forecaster.json").read_text()))
        net.load_state_dict(torch.load(folder / "forecaster.pt", weights_only=True))
        return net.eval()


def pinball_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean pinball loss of (B, H, 3) quantiles against (B, H) targets where `mask`, each example
    weighted by `weight` (B,) when given."""
    q = torch.tensor(QUANTILES, dtype=predicted.dtype, device=predicted.device)
    diff = target.unsqueeze(-1) - predicted
    loss = torch.maximum(q * diff, (q - 1) * diff).mean(-1)
    mask = mask.to(loss.dtype) * (1.0 if weight is None else weight.unsqueeze(1))
    return (loss * mask).sum() / mask.sum().clamp(min=1e-12)


class ForecastTask(TrainTask):
    """The neural forecaster as a task of the one loop; its arrays travel inside the task."""

    stage = STAGE

    def __init__(self, stage_cfg, arrays: ForecastArrays, horizon: int, world: int, key: dict,
                 network: dict | None = None, volume_weight: float = 0.0, vector_dropout: float = 0.0):
        self.stage_cfg, self.arrays = stage_cfg, arrays
        self.network, self.volume_weight, self.vector_dropout = network or {}, volume_weight, vector_dropout
        self.rows, self.anchors = arrays.examples(horizon)
        self.batch_size = stage_cfg.batch_size
        micro = len(self.rows) // (world * self.batch_size)
        if micro == 0:
            raise ValueError(f"{len(self.rows)} forecast training examples: fewer than one batch of forecast.train.batch_size "
                             f"({self.batch_size}) per worker; lower the batch size or give more history")
        self.steps_per_epoch = max(1, micro // stage_cfg.gradient_accumulation_steps)
        self._key = key

    def run_key(self) -> dict:
        return {**super().run_key(), **self._key, "inputs": INPUTS, "recipe": RECIPE, "network": self.network, "volume_weight": self.volume_weight,
                "vector_dropout": self.vector_dropout}

    def build_model(self):
        dim = 0 if self.arrays.vectors is None else self.arrays.vectors.shape[1]
        return QuantileForecastNet(self.arrays.window, self.arrays.max_horizon, dim, **self.network)

    def batches(self, epoch: int, rank: int, world: int):
        steps = len(self.rows) // (world * self.batch_size)
        order = np.random.default_rng([self.stage_cfg.seed, epoch]).permutation(len(self.rows))
        order = order[: steps * world * self.batch_size].reshape(steps, world, self.batch_size)
        for step in range(steps):
            yield order[step, rank]

    def loss(self, engine, batch, rng):
        rows, anchors = self.rows[batch], self.anchors[batch]
        inputs = {k: v.to(engine.device) for k, v in self.arrays.inputs(rows, anchors).items()}
        if "vector" in inputs and self.vector_dropout:
            # Some examples with a history see the product as if it had no vector; one without a history
            # (a launch) always sees it: there the vector is all the network has to go on.
            launch = (inputs["scalars"][:, 1] == 0).cpu().numpy()
            keep = torch.as_tensor((rng.random(len(batch)) >= self.vector_dropout) | launch, device=engine.device)
            inputs["vector"] = inputs["vector"] * keep[:, None]
            inputs["scalars"][:, 4] = inputs["scalars"][:, 4] * keep
        target, mask = (t.to(engine.device) for t in self.arrays.targets(rows, anchors))
        weight = None
        if self.volume_weight:  # recent level in units, from the window's last weeks
            level = torch.expm1(inputs["window"][:, -4:]).mean(1)
            weight = (1 + level) ** self.volume_weight
        members = engine(**inputs, every_member=True)  # each member learns on its own (diversity), summed
        return sum(pinball_loss(m, target, mask, weight) for m in members), {}, len(batch)

    def export(self, module, folder: Path) -> None:
        module.save(folder)


def predict_arrays(net: QuantileForecastNet, arrays: ForecastArrays, horizon: int, origin: pd.Timestamp,
                   freq: str = "W-MON") -> pd.DataFrame:
    """P10/P50/P90 of every product of `arrays` for `horizon` periods from `origin`, in units."""
    rows = np.arange(len(arrays.ids))
    anchors = np.full(len(rows), arrays.units.shape[1])
    with torch.no_grad():
        out = net(**arrays.inputs(rows, anchors))[:, :horizon].numpy()
    units = np.expm1(np.clip(out, 0, None))
    dates = pd.date_range(origin, periods=horizon, freq=freq)
    return pd.DataFrame({"unique_id": np.repeat(arrays.ids, horizon), "ds": np.tile(dates, len(rows)),
                         "p10": units[..., 0].ravel(), "p50": units[..., 1].ravel(), "p90": units[..., 2].ravel()})


@dataclass
class NeuralModel(Forecaster):
    """`fit` trains a run of the one loop (its own checkpoints: a rerun resumes); `predict` runs the
    exported network on the driver. `train`: a callable (task → export folder), from the stage."""

    train: object = None
    vectors: ItemVectors | None = None
    max_horizon: int = 12
    stage_cfg: object = None
    world: int = 1
    key: dict = field(default_factory=dict)
    network: dict = field(default_factory=dict)  # QuantileForecastNet's hidden, dropout
    volume_weight: float = 0.0
    vector_dropout: float = 0.0
    _arrays: ForecastArrays | None = None
    _net: QuantileForecastNet | None = None

    def fit(self, problem: ForecastProblem) -> None:
        if self.train is None:
            raise ValueError("the neural forecaster trains through the forecast stage (recsys.forecast.stage)")
        self._arrays = ForecastArrays.of(problem, self.max_horizon, self.vectors)
        key = {**self.key, "origin": str(problem.origin.date()), "vectors": self.vectors.source if self.vectors else None,
               "window": problem.window, "horizon": problem.horizon, "max_horizon": self.max_horizon,
               "products": len(self._arrays.ids), "units": float(self._arrays.units.sum())}
        task = ForecastTask(self.stage_cfg, self._arrays, problem.horizon, self.world, key, self.network, self.volume_weight,
                            self.vector_dropout)
        self.export_path = self.train(task)
        self._net = QuantileForecastNet.load(self.export_path)

    def predict(self, problem: ForecastProblem) -> pd.DataFrame:
        return predict_arrays(self._net, self._arrays, problem.horizon, problem.origin, problem.freq)
