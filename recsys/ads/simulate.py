"""Offline replay of the ad world's traffic day through the ad engine, scored against the world's
true click model: revenue, clicks, fill rate, budget and pacing per policy.

Every policy sees the same page views in the same order and the same click draws (one uniform
number per page view and slot: common random numbers), so the differences between policies are
the policies', not the dice's. The engine's scoring of each page view (retrieval, targeting, pCTR
per slot) is state-free and done once in batches; the auction, the ledger's filters and the clicks
run page view by page view, in time order, as a day of serving would.
"""

from __future__ import annotations

import numpy as np

from recsys.ads.ledger import AdLedger
from recsys.online.ads import AdEngine, ScoredCandidates

# benchmark name → (auction policy, pacing on)
POLICY_RUNS = {
    "random": ("random", False),
    "highest_bid": ("highest_bid", False),
    "highest_pctr": ("highest_pctr", False),
    "ecpm_gsp": ("ecpm", False),
    "ecpm_paced": ("ecpm", True),
}


def score_traffic(engine: AdEngine, traffic, slots: int, batch_size: int = 512) -> ScoredCandidates:
    """The engine's state-free part for every page view of the day, in batches."""
    histories = engine.world.users["history"].to_numpy()
    parts = []
    for lo in range(0, len(traffic), batch_size):
        rows = traffic.iloc[lo:lo + batch_size]
        parts.append(engine.score([list(histories[u]) for u in rows["user"]], rows["hour"].to_numpy(), rows["weekday"].to_numpy(), slots))
    return ScoredCandidates(np.concatenate([p.campaigns for p in parts]), np.concatenate([p.pctr for p in parts]),
                            np.concatenate([p.relevance for p in parts]))


def replay_day(engine: AdEngine, traffic, scored: ScoredCandidates, policy: str, paced: bool, slots: int, seed: int = 0,
               draws: np.ndarray | None = None) -> dict:
    cfg = engine.cfg.model_copy(update={"pacing": engine.cfg.pacing.model_copy(update={"enabled": paced})})
    c = engine.campaigns
    ledger = AdLedger(engine.bids, c["daily_budget"].to_numpy(), engine.world.campaign_traffic, cfg)
    truth = engine.world.truth
    rng = np.random.default_rng([seed, 1])  # the auction's own randomness: the random policy, pacing's throttle
    if draws is None:  # one uniform per page view and slot, common to every policy
        draws = np.random.default_rng([seed, 2]).random((len(traffic), slots))
    spend_by_hour = np.zeros((24, len(c)))
    users, hours, seconds = traffic["user"].to_numpy(), traffic["hour"].to_numpy(), traffic["second"].to_numpy()
    shown = clicks = 0
    expected_clicks = 0.0
    for r in range(len(traffic)):
        slate = engine.auction(scored, r, str(users[r]), ledger, float(seconds[r]), slots, rng, policy)
        shown += len(slate)
        for ad in slate:
            p = float(truth.probability(users[r], ad.campaign, ad.slot, hours[r]))
            expected_clicks += p
            if draws[r, ad.slot] < p:
                charged, _ = ledger.click(ad.impression_id)
                spend_by_hour[hours[r], ad.campaign] += charged
                clicks += 1
    return _report(ledger, spend_by_hour, engine.world.campaign_traffic, shown, clicks, expected_clicks, len(traffic) * slots)


def _report(ledger: AdLedger, spend_by_hour: np.ndarray, campaign_traffic: np.ndarray, shown: int, clicks: int,
            expected_clicks: float, slot_opportunities: int) -> dict:
    budgets, spent = ledger.budgets, ledger.spent
    ran = spent > 0
    cumulative = np.cumsum(spend_by_hour, axis=0)[:, ran] / np.maximum(spent[ran], 1e-12)
    # each campaign's own traffic curve: the page views its hour targeting lets it bid on
    target = (np.cumsum(campaign_traffic, axis=1) / np.maximum(campaign_traffic.sum(axis=1, keepdims=True), 1e-12)).T[:, ran]
    return {
        "revenue": round(float(spent.sum()), 2),
        "clicks": int(clicks),
        "expected_clicks": round(expected_clicks, 1),  # Σ true P(click) of the ads shown: the policy's value without the dice
        "impressions": int(shown),
        "ctr": round(clicks / shown, 5) if shown else 0.0,
        "fill_rate": round(shown / slot_opportunities, 4),
        "budget_spend_error": round(float(np.mean(np.abs(spent - budgets) / budgets)), 4),
        "max_overspend_ratio": round(float(np.max(spent / budgets)), 4),
        "campaigns_exhausted": int(np.sum(spent >= budgets - 1e-9)),
        "campaigns_spending": int(ran.sum()),
        "uncharged": round(float(ledger.uncharged.sum()), 2),
        # per campaign that spent: mean over the day's hours of |share of its spend so far − share of its traffic so far|,
        # averaged over campaigns weighted by their spend (the money that was or was not paced); unweighted beside it
        "pacing_error": round(float(np.average(np.abs(cumulative - target).mean(axis=0), weights=spent[ran])), 4) if ran.any() else None,
        "pacing_error_unweighted": round(float(np.mean(np.abs(cumulative - target))), 4) if ran.any() else None,
        # the same over the campaigns that spent (nearly) all their budget: the ones pacing is for; a campaign
        # its budget never limits keeps a pass rate of 1, and its spend follows the auctions it wins
        "pacing_error_budget_limited": _limited_error(cumulative, target, spent[ran], budgets[ran]),
        "campaigns_budget_limited": int(np.sum(spent >= 0.95 * budgets)),
        "revenue_by_hour": np.round(spend_by_hour.sum(axis=1), 2).tolist(),
    }


def replay_policies(engine: AdEngine, slots: int, seed: int = 0, day: str = "replay") -> dict:
    traffic = engine.world.traffic(day)
    scored = score_traffic(engine, traffic, slots)
    return {name: replay_day(engine, traffic, scored, policy, paced, slots, seed) for name, (policy, paced) in POLICY_RUNS.items()}


def _limited_error(cumulative: np.ndarray, target: np.ndarray, spent: np.ndarray, budgets: np.ndarray) -> float | None:
    limited = spent >= 0.95 * budgets
    if not limited.any():
        return None
    return round(float(np.average(np.abs(cumulative - target).mean(axis=0)[limited], weights=spent[limited])), 4)
