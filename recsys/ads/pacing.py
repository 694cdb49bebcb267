"""Budget pacing by probabilistic throttling: each campaign enters an auction with its pass rate,
and every `interval_s` a controller moves the rate by how far the campaign's spend so far is
ahead of the traffic it has seen so far.

Progress is cumulative: the share of the budget spent against the share of the campaign's traffic
(the logs' hourly page views within its hour targeting) seen by `lead_s` from now (aiming a little
ahead: a campaign still behind in the last hour cannot catch up). The rate is multiplied by
(progress / traffic share)^−gain, at most ×4 or ÷4 per update, within [min_pass_rate, 1]: a campaign
spending twice as fast as its traffic is slowed, one behind opens up to 1. Cumulative, not per
interval: a campaign gets a dozen clicks a day, so one interval's spend is mostly nothing or one
click, and a velocity measured per interval (the first controller here) swung with every click and
left the pacing error where no pacing left it (docs/ads.md). The multiplicative throttle is the
scheme of Agarwal et al., "Budget pacing for targeted online advertisements at LinkedIn", KDD 2014.
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
        """Once an interval has ended, move every pass rate by how far the campaign's spend so far
        is ahead of (or behind) the share of its traffic seen so far. Cumulative, not per interval:
        a campaign gets a few clicks a day, so one interval's spend is mostly 0 or one click."""
        if not self.cfg.enabled or second < self.next_update_s:
            return
        spent = np.asarray(spent, np.float64)
        share = self.target_share(min(second + self.cfg.lead_s, DAY_S))
        self.next_update_s = (second // self.cfg.interval_s + 1) * self.cfg.interval_s
        # campaigns that could bid during the interval just ended: a closed hour window (one that wraps
        # midnight is closed all day long) leaves spend and share unchanged, and must not wind the rate down
        active = self.target_share(second) > self.target_share(max(second - self.cfg.interval_s, 0.0))
        progress = spent / np.maximum(self.budgets, 1e-12)  # share of the budget spent so far
        with np.errstate(divide="ignore", invalid="ignore"):
            ahead = np.where(active, (progress + 1e-3) / np.maximum(share, 1e-6), 1.0)  # > 1: spending faster than its traffic
        step = np.clip(ahead ** -self.cfg.gain, 1 / MAX_STEP, MAX_STEP)
        self.rate = np.clip(np.where(active, self.rate * step, self.rate), self.cfg.min_pass_rate, 1.0)

    def passes(self, campaigns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.cfg.enabled:
            return np.ones(len(campaigns), bool)
        return rng.random(len(campaigns)) < self.rate[np.asarray(campaigns)]
