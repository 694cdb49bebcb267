"""Budget pacing by probabilistic throttling: each campaign enters an auction with its pass rate,
and every `interval_s` a controller sets the rate from the campaign's spend velocity.

Velocity is spend per unit of traffic (per share of the page views the campaign can buy: the
logs' hourly traffic curve within its hour targeting): over the last interval the campaign spent at velocity v with pass rate r; to spend what
is left of its budget over what is left of the day's traffic it needs d = remaining budget ÷
remaining traffic share. The new rate moves from r towards r · d / v (geometrically, by `gain`),
within [min_pass_rate, 1]. A campaign that cannot spend its budget even unthrottled stays at 1; one
that would spend it all by the morning is slowed so that it still bids in the evening, so more
campaigns compete in every auction and second prices hold up all day (the scheme of Agarwal et al.,
"Budget pacing for targeted online advertisements at LinkedIn", KDD 2014, with a velocity target).
"""

from __future__ import annotations

import numpy as np

from recsys.config import PacingConfig

DAY_S = 86_400
MAX_STEP = 4.0  # the most one update multiplies or divides a pass rate by, before smoothing


class PacingController:
    def __init__(self, budgets: np.ndarray, traffic: np.ndarray, cfg: PacingConfig):
        """`traffic`: the share of the day's page views per hour, (24,) for every campaign alike or
        (campaigns, 24) for the page views each campaign can buy (its hour targeting applied)."""
        self.budgets = np.asarray(budgets, np.float64)
        self.cfg = cfg
        self.rate = np.ones(len(self.budgets))
        traffic = np.broadcast_to(np.asarray(traffic, np.float64), (len(self.budgets), 24))
        # per campaign, the cumulative share of its traffic at the start of each hour, and 1 at midnight
        curve = np.concatenate([np.zeros((len(self.budgets), 1)), np.cumsum(traffic, axis=1)], axis=1)
        self._curve = curve / np.maximum(curve[:, -1:], 1e-12)
        self.next_update_s = cfg.interval_s
        self._last_share = np.zeros(len(self.budgets))
        self._last_spent = np.zeros(len(self.budgets))

    def target_share(self, second: float) -> np.ndarray:
        """(campaigns,) the share of each campaign's traffic before `second` (linear within an hour)."""
        h = min(max(second / 3600.0, 0.0), 24.0)
        i = min(int(h), 23)
        return self._curve[:, i] + (h - i) * (self._curve[:, i + 1] - self._curve[:, i])

    def update(self, second: float, spent: np.ndarray) -> None:
        """Once an interval has ended, set every pass rate from the spend since the last update
        (however many intervals that spans: sparse traffic or a restart mid-day)."""
        if not self.cfg.enabled or second < self.next_update_s:
            return
        spent = np.asarray(spent, np.float64)
        share = self.target_share(min(second, DAY_S))
        seen = share - self._last_share
        self.next_update_s = (second // self.cfg.interval_s + 1) * self.cfg.interval_s
        active = seen > 0  # campaigns whose hours had traffic since the last update (the others keep their rate)
        velocity = (spent - self._last_spent) / np.where(active, seen, 1.0)  # spend per traffic share at the current rates
        needed = np.maximum(self.budgets - spent, 0.0) / np.maximum(1.0 - share, 1e-6)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(velocity > 0, needed / velocity, MAX_STEP)  # nothing spent: open up, one bounded step
        wanted = self.rate * np.clip(ratio, 1 / MAX_STEP, MAX_STEP)
        moved = np.clip(self.rate ** (1 - self.cfg.gain) * wanted ** self.cfg.gain, self.cfg.min_pass_rate, 1.0)
        self.rate = np.where(active, moved, self.rate)
        self._last_share = np.where(active, share, self._last_share)
        self._last_spent = np.where(active, spent, self._last_spent)

    def passes(self, campaigns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.cfg.enabled:
            return np.ones(len(campaigns), bool)
        return rng.random(len(campaigns)) < self.rate[np.asarray(campaigns)]
