"""The ad engine: what `/ads`, the offline replay and the benchmark's bare path all call (Ray-free).

Per batch of requests: one encoder pass gives each user's state; the ad index (FAISS inner product
over the campaigns' item vectors) retrieves the user's nearest campaigns, of which the
targeting-eligible ones (categories in the user's history, the campaign's hours) are kept up to
`ads.auction.candidates`; the pCTR model scores those at every slot, and the calibration fitted on
the valid day maps its probabilities to calibrated ones. Per request, the ledger's state (budget,
frequency cap, pacing) filters the candidates and `recsys.ads.auction` fills the slots.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recsys.ads.auction import run_auction
from recsys.ads.calibration import Calibrator
from recsys.ads.ledger import AdLedger, read_log
from recsys.ads.world import HISTORY, AdWorld, hour_allowed
from recsys.artifacts import ModelExport
from recsys.config import AdsConfig


@dataclass
class ScoredCandidates:
    """Per request (row): candidate campaign indices (−1 pads), calibrated pCTR per slot, relevance u·v."""

    campaigns: np.ndarray  # (B, K) int
    pctr: np.ndarray  # (B, K, slots)
    relevance: np.ndarray  # (B, K)


@dataclass
class AdJob:
    """One /ads request's scoring work for a batch: the history and context in, the candidates out."""

    history: list[int]
    hour: int
    weekday: int
    campaigns: np.ndarray | None = None  # (K',) eligible candidates
    pctr: np.ndarray | None = None  # (K', slots)
    relevance: np.ndarray | None = None  # (K',)


@dataclass
class AdSlot:
    slot: int
    campaign: int
    pctr: float  # calibrated, at this slot
    ecpm: float  # pCTR × bid × 1000 at this slot
    price: float  # charged per click
    impression_id: str


class AdEngine:
    def __init__(self, export_path: str | Path, world: AdWorld, cfg: AdsConfig):
        import faiss

        from recsys.data.dataset import PreparedDataset
        from recsys.models import SeqRecForCTR

        export = ModelExport.load(export_path)
        if export.stage != "ads":
            raise ValueError(f"{export_path} is a {export.stage} export; /ads needs an ads export (the ads stage)")
        self.export, self.world, self.cfg = export, world, cfg
        self.model = SeqRecForCTR.from_pretrained(export_path).eval()
        self.calibrator = Calibrator.from_dict(export.meta.extra["calibration"])
        c = world.campaigns
        self.campaigns = c
        self.bids = c["bid"].to_numpy(np.float64)
        self.index_of = {cid: i for i, cid in enumerate(c["campaign_id"])}
        self.item_index = c["item_index"].to_numpy(np.int64)
        with torch.no_grad():
            self.vectors = self.model.seqrec.items(torch.as_tensor(self.item_index))
        self.ad_index = faiss.IndexFlatIP(self.vectors.shape[1])
        self.ad_index.add(np.ascontiguousarray(self.vectors.numpy(), dtype=np.float32))
        # targeting: campaign × category, and each item's category code (for any history, logged or live)
        categories = world.manifest["categories"]
        code = {name: i for i, name in enumerate(categories)}
        self.targets = np.zeros((len(c), len(categories)), bool)
        for i, names in enumerate(c["target_categories"]):
            self.targets[i, [code[n] for n in names]] = True
        self.untargeted = ~self.targets.any(axis=1)
        items = PreparedDataset(world.manifest["dataset"]).items()
        self.item_category = np.full(self.model.config.num_items + 2, -1, np.int64)
        self.item_category[items["item_index"].to_numpy()] = items["category"].fillna("unknown").map(code).fillna(-1).astype(int).to_numpy()

    def ledger(self, log_file: str | Path | None = None) -> AdLedger:
        """A fresh day's accounting over this engine's campaigns."""
        return AdLedger(self.bids, self.campaigns["daily_budget"].to_numpy(), self.world.campaign_traffic, self.cfg, log_file)

    def eligible(self, histories: list[list[int]], hours) -> np.ndarray:
        """(B, C) targeting: untargeted, or a targeted category among the last HISTORY items of the
        history (the world's definition of a user's interests); and the campaign's hours."""
        out = np.repeat(self.untargeted[None, :], len(histories), axis=0)
        for row, h in enumerate(histories):
            h = np.asarray(list(h)[-HISTORY:], np.int64)
            cats = self.item_category[h] if len(h) else np.zeros(0, np.int64)
            cats = np.unique(cats[cats >= 0])
            if len(cats):
                out[row] |= self.targets[:, cats].any(axis=1)
        return out & hour_allowed(self.campaigns, hours)

    def score(self, histories: list[list[int]], hours, weekdays, slots: int) -> ScoredCandidates:
        hours, weekdays = np.asarray(hours, np.int64), np.asarray(weekdays, np.int64)
        # items added while serving (cold start) have indices past the model's vocabulary: not an input it knows
        histories = [[i for i in h if 0 < i <= self.model.config.num_items] for h in histories]
        allowed = self.eligible(histories, hours)
        histories = [list(h[-self.model.config.max_seq_len:]) or [0] for h in histories]
        k = min(self.cfg.auction.candidates, len(self.bids))
        u = self.model.user_states(histories)
        _, nearest = self.ad_index.search(np.ascontiguousarray(u.numpy(), dtype=np.float32), min(len(self.bids), 4 * k))
        campaigns = np.full((len(histories), k), -1, np.int64)
        for row in range(len(histories)):
            ok = nearest[row][(nearest[row] >= 0) & allowed[row, np.maximum(nearest[row], 0)]][:k]
            if len(ok) < k:  # the ad index's neighbours ran short of eligible ones: the rest of the eligible, by relevance
                rest = np.setdiff1d(np.flatnonzero(allowed[row]), ok)
                if len(rest):
                    rel = (self.vectors[rest] @ u[row]).numpy()
                    ok = np.concatenate([ok, rest[np.argsort(-rel)][: k - len(ok)]])
            campaigns[row, : len(ok)] = ok
        v = self.vectors[np.maximum(campaigns, 0)]  # (B, K, H)
        item_rows = torch.as_tensor(self.item_index[np.maximum(campaigns, 0)])  # their item indices (the model's item bias)
        relevance = torch.einsum("bkh,bh->bk", v, u).numpy()
        # every slot in one head pass: the candidates repeated once per slot, slot s in the position feature
        b = len(histories)
        context = torch.as_tensor(np.stack([np.repeat(hours, k * slots), np.repeat(weekdays, k * slots),
                                            np.tile(np.repeat(np.arange(slots), k), b)], axis=1)).view(b, slots * k, 3)
        raw = torch.sigmoid(self.model.rank_states(u, v.repeat(1, slots, 1), context, item_rows.repeat(1, slots))).numpy()
        pctr = self.calibrator(raw).reshape(b, slots, k).transpose(0, 2, 1).copy()  # (B, K, slots)
        pctr[campaigns < 0] = 0.0
        return ScoredCandidates(campaigns, pctr, relevance)

    @property
    def slots(self) -> int:
        return len(self.world.manifest["click_model"]["position_bias"])

    def run_jobs(self, jobs: list[AdJob]) -> dict:
        """Score a batch of /ads requests in one encoder pass; timings for the serving metrics."""
        import time

        t = time.perf_counter()
        scored = self.score([j.history for j in jobs], [j.hour for j in jobs], [j.weekday for j in jobs], self.slots)
        for row, job in enumerate(jobs):
            present = scored.campaigns[row] >= 0
            job.campaigns, job.pctr, job.relevance = scored.campaigns[row, present], scored.pctr[row, present], scored.relevance[row, present]
        return {"ads_score_ms": (time.perf_counter() - t) * 1000}

    def auction(self, scored: ScoredCandidates, row: int, user_key: str, ledger: AdLedger, second: float, slots: int,
                rng: np.random.Generator, policy: str | None = None) -> list[AdSlot]:
        """Fill slots 0..slots−1 for request `row` of `scored` against `ledger` (the offline replay's path)."""
        present = scored.campaigns[row] >= 0
        return fill_slots(ledger, self.bids, self.cfg, user_key, scored.campaigns[row, present], scored.pctr[row, present],
                          scored.relevance[row, present], second, list(range(min(slots, scored.pctr.shape[2]))), rng, policy)


def fill_slots(ledger: AdLedger, bids: np.ndarray, cfg: AdsConfig, user_key: str, campaigns: np.ndarray, pctr: np.ndarray,
               relevance: np.ndarray, second: float, positions: list[int], rng: np.random.Generator, policy: str | None = None,
               id_prefix: str = "") -> list[AdSlot]:
    """The state-dependent half of an auction, run where the ledger is: the ledger filters the
    candidates (budget, frequency cap, pacing), `run_auction` ranks and prices them by their
    slot-0 pCTR, the best ad takes the first listed position; each shown ad is recorded under a new
    impression id. `pctr`: (K, slots) calibrated per slot."""
    campaigns = np.asarray(campaigns, np.int64)
    ok = ledger.available(user_key, campaigns, second, rng)
    campaigns, pctr, relevance = campaigns[ok], np.asarray(pctr)[ok], np.asarray(relevance)[ok]
    result = run_auction(pctr[:, 0] if len(pctr) else np.zeros(0), bids[campaigns], len(positions), cfg.auction, policy, relevance, rng)
    out = []
    for position, pos, price in zip(positions, result.winners, result.prices, strict=False):
        campaign = int(campaigns[pos])
        p = float(pctr[pos, position])
        imp = AdSlot(position, campaign, p, p * float(bids[campaign]) * 1000, float(price), id_prefix + uuid.uuid4().hex)
        ledger.record(imp.impression_id, user_key, campaign, imp.price, p, position, second)
        out.append(imp)
    return out


class AdBook:
    """The day's ledgers behind every replica's auctions: one owner (a Serve deployment), so that
    budgets and frequency caps hold across replicas. A day is a UTC date; its ledger's log lives in
    `folder/<date>.log`, so a restart resumes the day's spend. Impression ids start with their date:
    a click the next morning is charged to the day that served it."""

    KEEP_DAYS = 2  # today's ledger and yesterday's (late clicks)

    def __init__(self, bids: np.ndarray, budgets: np.ndarray, traffic: np.ndarray, cfg: AdsConfig,
                 folder: str | Path | None = None, seed: int | None = None):
        self.bids, self.budgets = np.asarray(bids, np.float64), np.asarray(budgets, np.float64)
        self.hourly, self.cfg = np.asarray(traffic), cfg  # (24,) or per campaign (C, 24): what pacing follows
        self.folder = Path(folder) if folder else None
        self.ledgers: dict[str, AdLedger] = {}
        self.rng = np.random.default_rng(seed)
        self._settings = self.folder / self.SETTINGS if self.folder else None
        if self._settings is not None and self._settings.is_file():  # advertisers' changes survive a restart
            for line in read_log(self._settings):
                try:
                    self._apply(*json.loads(line))
                except ValueError:
                    continue  # torn by a crash mid-write: never acknowledged

    SETTINGS = "campaign_settings.jsonl"

    def update(self, campaign: int, bid: float | None = None, daily_budget: float | None = None) -> None:
        """An advertiser's new bid or daily budget (both > 0), from the next auction on, durable before it returns."""
        for name, value in (("bid", bid), ("daily_budget", daily_budget)):
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self._settings is not None:
            self._settings.parent.mkdir(parents=True, exist_ok=True)
            with open(self._settings, "a", encoding="utf-8") as log:
                log.write(json.dumps([int(campaign), bid, daily_budget]) + "\n")
        self._apply(int(campaign), bid, daily_budget)

    def _apply(self, campaign: int, bid: float | None, daily_budget: float | None) -> None:
        for target in (self, *self.ledgers.values()):
            if bid is not None:
                target.bids[campaign] = bid
            if daily_budget is not None:
                target.budgets[campaign] = daily_budget
        for ledger in self.ledgers.values():
            ledger.pacing.budgets = ledger.budgets

    @staticmethod
    def day_and_second(timestamp_ms: int) -> tuple[str, float]:
        from datetime import UTC, datetime

        t = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
        return t.strftime("%Y-%m-%d"), t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6

    def ledger(self, day: str) -> AdLedger:
        if day not in self.ledgers:
            log = self.folder / f"{day}.log" if self.folder else None
            self.ledgers[day] = AdLedger(self.bids.copy(), self.budgets.copy(), self.hourly, self.cfg, log)
            for old in [d for d in sorted(self.ledgers) if d != day][: max(0, len(self.ledgers) - self.KEEP_DAYS)]:
                self.ledgers.pop(old).close()  # the oldest others: the day just asked for is never the one dropped
        return self.ledgers[day]

    def _clock(self, timestamp_ms: int) -> int:
        """The request's time under `ads.clock: request` (simulated days), else the server's."""
        import time

        return int(timestamp_ms) if self.cfg.clock == "request" else int(time.time() * 1000)

    def fill(self, user_key: str, campaigns, pctr, relevance, timestamp_ms: int, positions: list[int], policy: str | None = None) -> list[dict]:
        day, second = self.day_and_second(self._clock(timestamp_ms))
        slate = fill_slots(self.ledger(day), self.bids, self.cfg, user_key, np.asarray(campaigns), np.asarray(pctr),
                           np.asarray(relevance), second, positions, self.rng, policy, id_prefix=f"{day}.")
        return [vars(a) for a in slate]

    def campaign_of(self, impression_id: str) -> int:
        """The campaign an impression id showed; UnknownImpression for one this book never served."""
        from recsys.ads.ledger import UnknownImpression

        self._day_of(impression_id)
        imp = self.ledger(impression_id.split(".", 1)[0]).impressions.get(impression_id)
        if imp is None:
            raise UnknownImpression(impression_id)
        return imp.campaign

    def _day_of(self, impression_id: str) -> str:
        import re

        from recsys.ads.ledger import UnknownImpression

        day = impression_id.split(".", 1)[0]
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
            raise UnknownImpression(impression_id)
        if day in self.ledgers:
            return day
        # a day not open: only today's or yesterday's (by the book's clock) may be reopened from its log,
        # so an old date in an impression id cannot make the one ledger owner replay a whole old day
        from datetime import UTC, datetime, timedelta

        today = datetime.fromtimestamp(self._clock(0) / 1000, UTC) if self.cfg.clock == "server" else None
        recent = {f"{today:%Y-%m-%d}", f"{today - timedelta(days=1):%Y-%m-%d}"} if today else set()
        if day not in recent or not (self.folder and (self.folder / f"{day}.log").is_file()):
            raise UnknownImpression(impression_id)
        return day

    def click(self, impression_id: str) -> tuple[float, bool]:
        """(charged, first click) for an impression this book served; UnknownImpression otherwise."""
        return self.ledger(self._day_of(impression_id)).click(impression_id)

    def campaign(self, campaign: int, timestamp_ms: int) -> dict:
        day = self.day_and_second(self._clock(timestamp_ms))[0]
        return {**self.ledger(day).campaign_state(campaign), "bid": float(self.bids[campaign]), "day": day}
