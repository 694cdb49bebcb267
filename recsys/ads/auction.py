"""One ad auction: rank the eligible candidates, fill the slots, price each click.

Ranking by policy (the benchmark's baselines and the production rule):
- `ecpm`: pCTR × bid (expected revenue per impression), or pCTR^squash × bid with `squash` < 1
  (a squashed ranking: Lahaie & Pennock, "Revenue analysis of a family of ranking rules for keyword
  auctions", EC 2007), optionally × exp(organic_weight · z), z the
  candidate's standardised retrieval relevance for this user (a blend with organic relevance);
- `highest_bid`, `highest_pctr`: one factor alone; `random`: eligible ads in random order.

pCTR here is the calibrated probability at slot 0: position bias is one factor per slot for every ad
(the world's and the usual assumption), so the slot-0 order is the order at every slot.

Rules: a bid under the reserve never runs; an ad under the quality floor is not shown. Pricing
(`gsp`): a winner pays per click the least it could have bid to keep its rank, bid × s_next / s
(for eCPM that is eCPM_next / pCTR; for highest-bid the next bid), at least the reserve and at most
its own bid; under `highest_pctr` the bid does not change the rank, so that least bid is the
reserve. `first_price` pays the bid; `random` has no ranking to price against: it pays the bid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.config import AuctionConfig

POLICIES = ("random", "highest_bid", "highest_pctr", "ecpm")


@dataclass(frozen=True)
class AuctionResult:
    winners: np.ndarray  # positions into the candidate arrays, slot 0 first
    prices: np.ndarray  # charged per click
    scores: np.ndarray  # the policy's rank score of each winner


def rank_scores(policy: str, pctr: np.ndarray, bids: np.ndarray, relevance: np.ndarray | None, organic_weight: float,
                rng: np.random.Generator | None, squash: float = 1.0) -> np.ndarray:
    if policy == "ecpm":
        score = (pctr if squash == 1.0 else pctr ** squash) * bids
        if organic_weight and relevance is not None and len(relevance) > 1 and relevance.std() > 0:
            score = score * np.exp(organic_weight * (relevance - relevance.mean()) / relevance.std())
        return score
    if policy == "highest_bid":
        return bids.astype(np.float64)
    if policy == "highest_pctr":
        return pctr.astype(np.float64)
    if policy == "random":
        if rng is None:
            raise ValueError("the random policy needs an rng")
        return rng.random(len(bids))
    raise ValueError(f"unknown ad policy {policy!r}; use one of {', '.join(POLICIES)}")


def run_auction(pctr: np.ndarray, bids: np.ndarray, slots: int, cfg: AuctionConfig, policy: str | None = None,
                relevance: np.ndarray | None = None, rng: np.random.Generator | None = None) -> AuctionResult:
    """`pctr`, `bids` (and `relevance`): one value per eligible candidate (budget, frequency cap and
    pacing already applied by the caller)."""
    policy = policy or cfg.policy
    pctr, bids = np.asarray(pctr, np.float64), np.asarray(bids, np.float64)
    keep = np.flatnonzero((bids >= cfg.reserve_cpc) & (pctr >= cfg.quality_floor))
    if not len(keep) or slots <= 0:
        empty = np.zeros(0)
        return AuctionResult(np.zeros(0, np.int64), empty, empty)
    rel = None if relevance is None else np.asarray(relevance, np.float64)[keep]
    score = rank_scores(policy, pctr[keep], bids[keep], rel, cfg.organic_weight, rng, cfg.squash)
    order = np.argsort(-score, kind="stable")
    won = order[:slots]
    if cfg.pricing == "first_price" or policy == "random":
        prices = bids[keep][won]
    elif policy == "highest_pctr":  # the rank does not depend on the bid: the least bid that keeps it is the reserve
        prices = np.full(len(won), cfg.reserve_cpc)
    else:
        # the next-ranked score, the last winner's being the best loser's, or the reserve's equivalent
        next_score = np.append(score[order[1:slots + 1]], np.zeros(max(0, slots + 1 - len(order))))[: len(won)]
        prices = bids[keep][won] * next_score / np.maximum(score[won], 1e-300)
        prices = np.maximum(prices, cfg.reserve_cpc)
    prices = np.minimum(np.round(prices, 4), bids[keep][won])  # rounded, never above the bid
    return AuctionResult(keep[won], prices, score[won])
