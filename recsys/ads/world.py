"""The ad world over a prepared shop: campaigns, logged ad impressions and a day of traffic, all
drawn from a known click model so that every ad policy can be scored offline against the truth.

No public ad log with bids, budgets and clicks is available here, so this is a simulation. What it
assumes (docs/ads.md):
- each campaign promotes one catalog item with a cost-per-click bid (log-normal), a daily budget
  (all budgets together are `budget_ratio` of the day's expected clicks priced at the bids, split
  with a heavy tail: small budgets bind, large ones do not), and
  targeting: users with a history in its categories, and for some a 12-hour window of the day;
- a user's interest in a category is its share of the user's training history (what the shop's
  generator draws users' clicks from), so the pCTR model can learn it from the history it sees;
- P(click) = position_bias[slot] × sigmoid(base + interest_weight × interest + quality + hour
  effect): examination × attraction, with a hidden creative quality per campaign that only the
  logged clicks reveal;
- logged impressions come from a policy that shows eligible campaigns uniformly at random (an
  exploration log: unbiased training data, unlike a production log of past winners);
- page views per hour follow one daily curve (evening peak, lunch bump), users ∝ their activity.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.artifacts import Dataset, atomic_folder, point_latest
from recsys.config import AdWorldConfig, RecsysConfig

SPLITS = ("train", "valid", "test")
HISTORY = 50  # the user's last training items that define interest (and the model's input)


def hourly_traffic() -> np.ndarray:
    """Share of a day's page views in each hour: low at night, a lunch bump, an evening peak."""
    h = np.arange(24)
    w = 0.15 + np.exp(-(((h - 20.5) / 3.0) ** 2)) + 0.5 * np.exp(-(((h - 12.5) / 2.0) ** 2)) + 0.3 * ((h >= 8) & (h <= 22))
    return w / w.sum()


def hour_effect(hours: np.ndarray) -> np.ndarray:
    """Click log-odds by hour: users click ads a little more in the evening."""
    return 0.25 * np.cos(2 * np.pi * (np.asarray(hours) - 20) / 24)


@dataclass(frozen=True)
class ClickModel:
    """The world's ground truth: P(click | user, campaign, slot, hour)."""

    interest: np.ndarray  # (users, categories) history share
    campaign_category: np.ndarray  # (campaigns,)
    quality: np.ndarray  # (campaigns,) hidden creative quality, log-odds
    position_bias: np.ndarray  # (slots,)
    base_logit: float
    interest_weight: float

    def probability(self, users, campaigns, slots, hours) -> np.ndarray:
        users, campaigns = np.asarray(users), np.asarray(campaigns)
        logit = (self.base_logit + self.interest_weight * self.interest[users, self.campaign_category[campaigns]]
                 + self.quality[campaigns] + hour_effect(hours))
        return self.position_bias[np.asarray(slots)] / (1.0 + np.exp(-logit))


class AdWorld:
    """A published ad world version: ad_worlds/<run>/<version>/ (campaigns, users, impressions, traffic)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "manifest.json").is_file():
            raise FileNotFoundError(f"{self.path} is not an ad world (no manifest.json); run the ads stage: "
                                    "python ray_jobs/train_ads.py --config <file>")

    @cached_property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())

    @property
    def version(self) -> str:
        return self.path.name

    @cached_property
    def campaigns(self) -> pd.DataFrame:
        return pq.read_table(self.path / "campaigns.parquet").to_pandas()

    @cached_property
    def users(self) -> pd.DataFrame:
        """user (int code), user_id, history (item indices, oldest first)."""
        return pq.read_table(self.path / "users.parquet").to_pandas()

    def impressions(self, split: str) -> pd.DataFrame:
        if split not in SPLITS:
            raise ValueError(f"unknown ad impression split {split!r}; use one of {', '.join(SPLITS)}")
        return pq.read_table(self.path / "impressions", filters=[("split", "=", split)]).to_pandas()

    def traffic(self, day: str = "replay") -> pd.DataFrame:
        """A day of page views: request, user, second (of the day), hour, weekday; in time order.
        "replay": the day after the logs (where policies are compared); "valid": the valid day's
        page views (where settings are chosen)."""
        if day == "valid":
            imp = self.impressions("valid")
            return (imp.drop_duplicates("request")[["request", "user", "second", "hour", "weekday"]]
                    .sort_values("second", kind="stable").reset_index(drop=True))
        if day != "replay":
            raise ValueError(f"unknown traffic day {day!r}; use replay or valid")
        return pq.read_table(self.path / "traffic.parquet").to_pandas()

    @cached_property
    def truth(self) -> ClickModel:
        t = np.load(self.path / "truth.npz")
        m = self.manifest["click_model"]
        return ClickModel(t["interest"], self.campaigns["category_code"].to_numpy(), self.campaigns["quality"].to_numpy(),
                          np.asarray(m["position_bias"]), m["base_logit"], m["interest_weight"])

    @cached_property
    def eligible(self) -> np.ndarray:
        """(users, campaigns) bool: the campaign's category targeting admits the user."""
        return np.load(self.path / "truth.npz")["eligible"]

    def hour_allowed(self, hours) -> np.ndarray:
        return hour_allowed(self.campaigns, hours)

    @cached_property
    def campaign_traffic(self) -> np.ndarray:
        return campaign_traffic(self.campaigns, np.asarray(self.manifest["hourly_traffic"]))

    def ctr_rows(self, split: str, max_seq_len: int) -> pa.Table:
        """The split's impressions in the CTR task's columns (recsys/train/seqrec_tasks.py): history,
        candidate (the ad item's index), hour, weekday, session_position (the slot), label, user."""
        imp = self.impressions(split)
        histories = self.users["history"].to_numpy()
        items = self.campaigns["item_index"].to_numpy()
        return pa.table({
            "history": pa.array([list(histories[u][-max_seq_len:]) for u in imp["user"]], pa.list_(pa.int32())),
            "candidate": pa.array(items[imp["campaign"].to_numpy()], pa.int64()),
            "hour": pa.array(imp["hour"].to_numpy(), pa.int64()),
            "weekday": pa.array(imp["weekday"].to_numpy(), pa.int64()),
            "session_position": pa.array(imp["slot"].to_numpy(), pa.int64()),
            "label": pa.array(imp["label"].to_numpy(), pa.int8()),
            "user": pa.array(imp["user"].to_numpy(), pa.int64()),
        })


def hour_allowed(campaigns: pd.DataFrame, hours) -> np.ndarray:
    """(len(hours), campaigns) bool: each campaign's time-of-day targeting, [hour_start, hour_end)
    wrapping past midnight; hour_start == hour_end means all day."""
    start, end = campaigns["hour_start"].to_numpy(), campaigns["hour_end"].to_numpy()
    h = np.asarray(hours)[:, None]
    return np.where(start <= end, (h >= start) & (h < end), (h >= start) | (h < end)) | (start == end)


BUDGET_FIELDS = ("budget_ratio", "budget_sigma")  # drawn after the impressions: they do not change them


def campaign_traffic(campaigns: pd.DataFrame, hourly: np.ndarray) -> np.ndarray:
    """(campaigns, 24): the share of the day's page views per hour that each campaign's hour
    targeting lets it bid on (what its pacing follows)."""
    return np.asarray(hourly, np.float64)[None, :] * hour_allowed(campaigns, np.arange(24)).T


def world_version(world: AdWorldConfig, dataset: Dataset, without: tuple[str, ...] = ()) -> str:
    key = json.dumps({"dataset": str(dataset.path.resolve()), "world": world.model_dump(mode="json", exclude=set(without))},
                     sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def ad_world(cfg: RecsysConfig, dataset: Dataset) -> AdWorld:
    """The ad world of this config over `dataset`: loaded when published, else drawn and published
    (ad_worlds/<run_name>/<version>, version = hash of the dataset and `ads.world`)."""
    parent = cfg.artifacts_root / "ad_worlds" / cfg.run_name
    version = world_version(cfg.ads.world, dataset)
    final = parent / version
    if not (final / "manifest.json").is_file():
        with atomic_folder(final) as scratch:
            _draw(cfg.ads.world, dataset, scratch)
    point_latest(parent, version)
    return AdWorld(final)


def latest_world(cfg: RecsysConfig) -> AdWorld:
    from recsys.artifacts import latest_version

    return AdWorld(latest_version(cfg.artifacts_root / "ad_worlds" / cfg.run_name, "ad world"))


def _users(dataset: Dataset) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Users with a training history, their last HISTORY items, and interest = category shares."""
    train = dataset.read_split("train")
    train = train[train["items"].map(len) > 0].reset_index(drop=True)
    items = dataset.items()
    if "category" not in items or items["category"].isna().all():
        raise ValueError(f"{dataset.path}: the ad world targets by category and its catalog has none; "
                         "use a shop whose catalog has categories (data.source: synthetic)")
    categories = sorted(items["category"].fillna("unknown").unique())
    code = {c: i for i, c in enumerate(categories)}
    item_cat = np.zeros(dataset.num_items + 2, np.int64)
    item_cat[items["item_index"].to_numpy()] = items["category"].fillna("unknown").map(code).to_numpy()
    histories = [np.asarray(h[-HISTORY:], np.int32) for h in train["items"]]
    interest = np.zeros((len(histories), len(categories)))
    for u, h in enumerate(histories):
        interest[u] = np.bincount(item_cat[h], minlength=len(categories)) / len(h)
    users = pd.DataFrame({"user": np.arange(len(histories)), "user_id": train["user_id"].to_numpy(), "history": histories})
    return users, interest, categories


def _campaigns(cfg: AdWorldConfig, dataset: Dataset, categories: list[str], rng) -> pd.DataFrame:
    items = dataset.items()
    items = items[items["train_count"] > 0]  # advertisers promote products the shop has sold
    picked = items.sample(n=min(cfg.campaigns, len(items)), random_state=int(rng.integers(2**31))).reset_index(drop=True)
    n = len(picked)
    code = {c: i for i, c in enumerate(categories)}
    cat = picked["category"].fillna("unknown").map(code).to_numpy()
    targeted = rng.random(n) < cfg.targeted_share
    second = rng.integers(0, len(categories), n)
    targets = [sorted({categories[c], categories[s]} if rng.random() < 0.5 else {categories[c]}) if t else []
               for c, s, t in zip(cat, second, targeted, strict=True)]
    windowed = rng.random(n) < cfg.hour_targeted_share
    start = np.where(windowed, rng.integers(0, 24, n), 0)
    return pd.DataFrame({
        "campaign_id": [f"cmp-{i:05d}" for i in range(n)],
        "advertiser_id": [f"adv-{i % cfg.advertisers:04d}" for i in range(n)],
        "item_id": picked["item_id"].to_numpy(),
        "item_index": picked["item_index"].to_numpy().astype(np.int64),
        "category": picked["category"].fillna("unknown").to_numpy(),
        "category_code": cat,
        "bid": np.round(cfg.mean_cpc_bid * rng.lognormal(0.0, cfg.bid_sigma, n), 2).clip(0.01),
        "target_categories": targets,
        "hour_start": start,
        "hour_end": np.where(windowed, (start + 12) % 24, 0),
        "quality": rng.normal(0.0, cfg.quality_sigma, n),
    })


def _requests(n: int, users: pd.DataFrame, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, second of day, hour) of n page views in time order: users ∝ activity, hours by the curve."""
    activity = users["history"].map(len).to_numpy().astype(float)
    user = rng.choice(len(users), size=n, p=activity / activity.sum())
    hour = rng.choice(24, size=n, p=hourly_traffic())
    second = hour * 3600 + rng.integers(0, 3600, n)
    order = np.argsort(second, kind="stable")
    return user[order], second[order], hour[order]


def _draw(cfg: AdWorldConfig, dataset: Dataset, folder: Path) -> None:
    rng = np.random.default_rng(cfg.seed)
    users, interest, categories = _users(dataset)
    campaigns = _campaigns(cfg, dataset, categories, rng)
    cat_code = {c: i for i, c in enumerate(categories)}
    eligible = np.ones((len(users), len(campaigns)), bool)
    for c, targets in enumerate(campaigns["target_categories"]):
        if len(targets):
            eligible[:, c] = interest[:, [cat_code[t] for t in targets]].sum(axis=1) > 0
    bias = np.asarray(cfg.position_bias[: cfg.slots])
    truth = ClickModel(interest, campaigns["category_code"].to_numpy(), campaigns["quality"].to_numpy(), bias,
                       cfg.base_logit, cfg.interest_weight)

    frames = []
    for day in range(cfg.logged_days):
        split = "test" if day == cfg.logged_days - 1 else "valid" if day == cfg.logged_days - 2 else "train"
        user, second, hour = _requests(cfg.requests_per_day, users, rng)
        allowed = eligible[user] & hour_allowed(campaigns, hour)
        # the exploration log: up to `slots` distinct eligible campaigns per page view, at random
        keys = np.where(allowed, rng.random(allowed.shape), -1.0)
        shown = np.argsort(-keys, axis=1)[:, : cfg.slots]
        ok = np.take_along_axis(keys, shown, axis=1) >= 0
        req, slot = np.nonzero(ok)
        camp = shown[req, slot]
        p = truth.probability(user[req], camp, slot, hour[req])
        frames.append(pd.DataFrame({
            "split": split, "day": day, "request": req + day * cfg.requests_per_day, "user": user[req], "campaign": camp,
            "slot": slot, "hour": hour[req], "weekday": day % 7, "second": second[req],
            "label": (rng.random(len(req)) < p).astype(np.int8), "p_true": p,
        }))
    impressions = pd.concat(frames, ignore_index=True)
    # budgets: all together `budget_ratio` of a day's expected clicks priced at the bids, split ∝ bid × noise
    clicks_per_day = impressions["p_true"].sum() / cfg.logged_days
    share = campaigns["bid"].to_numpy() * rng.lognormal(0.0, cfg.budget_sigma, len(campaigns))
    spend_at_bids = clicks_per_day * float(campaigns["bid"].mean())
    campaigns["daily_budget"] = np.round(cfg.budget_ratio * spend_at_bids * share / share.sum(), 2).clip(0.01)

    user, second, hour = _requests(cfg.requests_per_day, users, rng)
    traffic = pd.DataFrame({"request": np.arange(len(user)), "user": user, "second": second, "hour": hour,
                            "weekday": cfg.logged_days % 7})

    pq.write_table(pa.Table.from_pandas(campaigns, preserve_index=False), folder / "campaigns.parquet")
    pq.write_table(pa.Table.from_pandas(users, preserve_index=False), folder / "users.parquet")
    pq.write_to_dataset(pa.Table.from_pandas(impressions, preserve_index=False), folder / "impressions", partition_cols=["split"])
    pq.write_table(pa.Table.from_pandas(traffic, preserve_index=False), folder / "traffic.parquet")
    np.savez_compressed(folder / "truth.npz", interest=interest, eligible=eligible)
    (folder / "manifest.json").write_text(json.dumps({
        "dataset": str(dataset.path), "world": cfg.model_dump(mode="json"), "categories": categories,
        "impressions_key": world_version(cfg, dataset, without=BUDGET_FIELDS),
        "campaigns": len(campaigns), "users": len(users), "impressions": {s: int((impressions["split"] == s).sum()) for s in SPLITS},
        "ctr": {s: round(float(impressions.loc[impressions["split"] == s, "label"].mean()), 5) for s in SPLITS},
        "expected_clicks_per_day": round(float(clicks_per_day), 1),
        "click_model": {"position_bias": bias.tolist(), "base_logit": cfg.base_logit, "interest_weight": cfg.interest_weight},
        "hourly_traffic": hourly_traffic().round(5).tolist(),
    }, indent=2))
