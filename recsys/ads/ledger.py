"""A day's ad accounting: budgets, spend charged on clicks, frequency caps, the pacing controller
and every impression served, by impression id.

- A click is charged once: a second click event for the same impression id charges nothing
  (idempotent), and a click for an impression never served is refused.
- A campaign runs only while it has budget left, and a click's charge is capped at what is left,
  so spend never exceeds the daily budget (clicks on impressions served before the budget ran out
  cost the advertiser at most the remainder; what they were not charged is reported as
  `uncharged`). Real ad servers also deliver such clicks; this one bills them up to the budget.
- Durable when given a folder: each impression and click is appended to the day's log before it
  is acknowledged, and a restart replays the log (the memory event store's scheme).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.ads.pacing import PacingController
from recsys.config import AdsConfig


class UnknownImpression(KeyError):
    """A click for an impression id this ledger never served (today)."""


@dataclass
class Impression:
    campaign: int
    user: str
    price: float
    pctr: float
    slot: int
    second: float
    clicked: bool = False
    charged: float = 0.0


class AdLedger:
    def __init__(self, bids: np.ndarray, budgets: np.ndarray, traffic: np.ndarray, cfg: AdsConfig,
                 log_file: str | Path | None = None, fsync: bool = False):
        self.bids = np.asarray(bids, np.float64)
        self.budgets = np.asarray(budgets, np.float64)
        self.cfg = cfg
        self.spent = np.zeros(len(self.budgets))
        self.uncharged = np.zeros(len(self.budgets))
        self.shown = np.zeros(len(self.budgets), np.int64)
        self.clicks = np.zeros(len(self.budgets), np.int64)
        self.frequency: dict[tuple[str, int], int] = {}
        self.impressions: dict[str, Impression] = {}
        self.pacing = PacingController(self.budgets, traffic, cfg.pacing)  # traffic: (24,) or per campaign (C, 24)
        self._lock = threading.Lock()
        self._fsync = fsync
        self._log = None
        if log_file is not None:
            self._replay(Path(log_file))
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_file, "a", encoding="utf-8")  # noqa: SIM115 - held open for appends

    # ---- auction side --------------------------------------------------------------------
    def available(self, user: str, campaigns: np.ndarray, second: float, rng: np.random.Generator) -> np.ndarray:
        """Which of `campaigns` may enter this user's auction now: budget left, under the frequency
        cap, and through pacing's throttle (after the controller's updates due by `second`)."""
        campaigns = np.asarray(campaigns, np.int64)
        with self._lock:
            self.pacing.update(second, self.spent)
            has_budget = self.spent[campaigns] < self.budgets[campaigns]
            cap = self.cfg.auction.frequency_cap
            capped = np.array([bool(user) and self.frequency.get((user, int(c)), 0) >= cap for c in campaigns], bool)
            return has_budget & ~capped & self.pacing.passes(campaigns, rng)

    def record(self, impression_id: str, user: str, campaign: int, price: float, pctr: float, slot: int, second: float) -> None:
        with self._lock:
            if impression_id in self.impressions:
                raise ValueError(f"impression id {impression_id} was already served")
            self._write(["imp", impression_id, user, int(campaign), float(price), float(pctr), int(slot), float(second)])
            self._served(impression_id, user, int(campaign), float(price), float(pctr), int(slot), float(second))

    def _served(self, impression_id, user, campaign, price, pctr, slot, second) -> None:
        self.impressions[impression_id] = Impression(campaign, user, price, pctr, slot, second)
        if user:  # "" is an anonymous request: no frequency cap to keep
            self.frequency[(user, campaign)] = self.frequency.get((user, campaign), 0) + 1
        self.shown[campaign] += 1

    # ---- click side ----------------------------------------------------------------------
    def click(self, impression_id: str) -> tuple[float, bool]:
        """Charge the impression's click: (amount charged, True) the first time, (0.0, False) for a
        repeat. Raises UnknownImpression for an id never served."""
        with self._lock:
            imp = self.impressions.get(impression_id)
            if imp is None:
                raise UnknownImpression(impression_id)
            if imp.clicked:
                return 0.0, False
            self._write(["click", impression_id])
            return self._charge(imp), True

    def _charge(self, imp: Impression) -> float:
        amount = max(0.0, min(imp.price, self.budgets[imp.campaign] - self.spent[imp.campaign]))
        imp.clicked, imp.charged = True, amount
        self.spent[imp.campaign] += amount
        self.uncharged[imp.campaign] += imp.price - amount
        self.clicks[imp.campaign] += 1
        return amount

    def campaign_state(self, campaign: int) -> dict:
        with self._lock:
            c = int(campaign)
            return {"daily_budget": round(float(self.budgets[c]), 4), "spent": round(float(self.spent[c]), 4),
                    "remaining": round(float(max(self.budgets[c] - self.spent[c], 0.0)), 4),
                    "impressions": int(self.shown[c]), "clicks": int(self.clicks[c]),
                    "pass_rate": round(float(self.pacing.rate[c]), 4), "uncharged": round(float(self.uncharged[c]), 4)}

    # ---- durability ----------------------------------------------------------------------
    def _write(self, entry: list) -> None:
        if self._log is None:
            return
        self._log.write(json.dumps(entry) + "\n")
        self._log.flush()
        if self._fsync:
            os.fsync(self._log.fileno())

    def _replay(self, log_file: Path) -> None:
        if not log_file.is_file():
            return
        for line in read_log(log_file):
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write was never acknowledged
            if entry[0] == "imp" and entry[1] not in self.impressions:
                self._served(*entry[1:])
            elif entry[0] == "click" and entry[1] in self.impressions and not self.impressions[entry[1]].clicked:
                self._charge(self.impressions[entry[1]])

    def close(self) -> None:
        if self._log is not None:
            self._log.close()


def read_log(path: Path) -> list[str]:
    """The complete lines of an append-only log. A last line without its newline was torn by a
    crash mid-write (never acknowledged): it is cut off the file, so that the next append starts a
    line of its own instead of being glued to it and lost at the next replay."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    return data[:end].decode("utf-8").splitlines()
