"""Ranking metrics (HR, NDCG, MRR; graded nDCG, Recall, MRR), CTR metrics (AUC, GAUC, log-loss,
expected calibration error and reliability bins) and
demand-forecast metrics (WAPE, MASE, pinball loss, interval coverage): the one place every evaluation —
full ranking, the sampled protocol, in-loop validation, search, forecast backtests —
computes them.

The tie rule, everywhere: ties are broken uniformly at random, and every metric is its exact
expectation over that random order (McSherry & Najork, "Computing information retrieval
performance measures efficiently in the presence of tied scores", ECIR 2008). So a scorer that
gives every item the same score gets the metrics of a random ranking: no free hit (ties won by the
target) and no unfair zero (ties lost by it). Breaking ties by item index, or counting them all
against the target, makes a metric depend on item ids or punish coarse scores (integer popularity
counts, BM25 zeros, bf16 logits) for something the scorer never said.

Single target (recommendation, sampled negatives, a search with one clicked item): a row is the
pair (higher, tied) = items scoring strictly above the target, OTHER items scoring exactly the
same. Under the rule the target's 0-based position is uniform on higher .. higher + tied, and every
metric is a mean over those tied + 1 positions. `auc` counts a tied (positive, negative) pair as
one half: the same rule, as AUC is the probability that a random order puts the positive first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch


def _prefix(f, n: int) -> np.ndarray:
    """F[m] = sum of f(p) over positions p < m, m = 0..n: a sum over positions lo..hi-1 is F[hi] - F[lo]."""
    return np.concatenate([[0.0], np.cumsum(f(np.arange(n, dtype=np.float64)))])


def _discount(p):  # DCG discount of 0-based position p
    return 1.0 / np.log2(p + 2.0)


def _reciprocal(p):
    return 1.0 / (p + 1.0)


def tie_counts(scores: torch.Tensor | np.ndarray, targets, exclude: list[list[int]] | None = None) -> np.ndarray:
    """(higher, tied) of each row's target. (B, N) scores, (B,) target columns → (B, 2) int64.

    Full ranking: N = every item index, `targets` the item indices. Sampled protocol: a
    (B, 1 + S) matrix of [target, S negatives] with targets all 0. `exclude`: per-row columns left
    out of the competition (the user's history); the target itself is never excluded, even when
    it is in the history (a re-purchase is still a hit).
    """
    scores = torch.as_tensor(scores)
    rows = torch.arange(scores.shape[0], device=scores.device)
    targets = torch.as_tensor(targets, dtype=torch.long, device=scores.device)
    competing = torch.ones_like(scores, dtype=torch.bool)  # (B, N): which columns compete with the target
    if exclude is not None:
        lengths = [len(items) for items in exclude]
        if sum(lengths):
            r = np.repeat(np.arange(len(exclude)), lengths)
            c = np.concatenate([np.asarray(list(items), dtype=np.int64) for items in exclude if len(items)])
            competing[torch.as_tensor(r, device=scores.device), torch.as_tensor(c, device=scores.device)] = False
    competing[rows, targets] = False  # never excluded; and not its own competitor, so `tied` counts others
    mine = scores[rows, targets][:, None]  # (B, 1)
    higher = ((scores > mine) & competing).sum(1)
    tied = ((scores == mine) & competing).sum(1)
    return torch.stack([higher, tied], 1).cpu().numpy().astype(np.int64)


def ranking_metrics(counts: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """Mean over rows of the expected HR@k, NDCG@k, MRR@k (each k) and MRR. (B, 2) counts → dict.

    With the position p uniform on lo = higher .. hi - 1 = higher + tied:
    HR@k = P(p < k), NDCG@k = E[1/log2(p + 2); p < k] (one relevant item, so IDCG = 1),
    MRR@k = E[1/(p + 1); p < k], MRR = E[1/(p + 1)].
    """
    counts, ks = np.asarray(counts, dtype=np.int64).reshape(-1, 2), sorted(ks)
    lo = counts[:, 0]
    n = counts[:, 1] + 1  # positions the target may take
    hi = lo + n
    out: dict[str, float] = {}
    mean = lambda x: float(x.mean()) if len(x) else float("nan")  # noqa: E731
    top = int(hi.max()) if len(hi) else 0
    disc, recip = _prefix(_discount, max(top, *ks)), _prefix(_reciprocal, max(top, *ks))  # (max + 1,)
    for k in ks:
        a, b = np.minimum(lo, k), np.minimum(hi, k)  # the part of lo..hi-1 inside the top k
        out[f"hr@{k}"] = mean((b - a) / n)
        out[f"ndcg@{k}"] = mean((disc[b] - disc[a]) / n)
        out[f"mrr@{k}"] = mean((recip[b] - recip[a]) / n)
    out["mrr"] = mean((recip[hi] - recip[lo]) / n)
    return out


def graded_metrics(scores: np.ndarray, relevance: Mapping[int, float], ks: Iterable[int]) -> dict[str, float]:
    """Expected nDCG@k, Recall@k (each k) and MRR of one query. (N,) scores; `relevance`:
    {column of `scores`: grade}, grade > 0 relevant (absent or 0: not).

    nDCG@k: gain = grade, DCG = sum of gain × discount, IDCG@k from the gains sorted best first.
    An item whose tie group spans positions s .. e-1 gets the mean discount of those positions
    (the expectation is linear, so E[DCG] sums these). Recall@k = E[relevant items in the top k] /
    relevant items. MRR = E[1 / (position of the first relevant item + 1)].
    """
    scores = np.asarray(scores)
    rel = {int(i): float(g) for i, g in relevance.items() if g > 0}
    if not rel:
        raise ValueError("the query has no relevant item (every grade is 0); leave it out of the evaluation")
    items = np.fromiter(rel, dtype=np.int64)
    gains = np.fromiter(rel.values(), dtype=np.float64)
    mine = scores[items][:, None]  # (R, 1)
    s = (scores[None] > mine).sum(1)  # (R,) each relevant item's tie group spans s .. e-1
    e = s + (scores[None] == mine).sum(1)
    ks = sorted(ks)
    disc = _prefix(_discount, max(int(e.max()), *ks))
    ideal = np.sort(gains)[::-1] * _discount(np.arange(len(gains)))  # (R,) the ideal DCG's terms
    out: dict[str, float] = {}
    for k in ks:
        a, b = np.minimum(s, k), np.minimum(e, k)
        out[f"ndcg@{k}"] = float((gains * (disc[b] - disc[a]) / (e - s)).sum() / ideal[:k].sum())
        out[f"recall@{k}"] = float(((b - a) / (e - s)).mean())
    # The first relevant item is in the best tie group holding one, of size n, holding r relevant
    # items: its offset j in the group is the least of r distinct uniform positions among n,
    # P(j) = C(n-1-j, r-1) / C(n, r), P(0) = r/n, P(j+1)/P(j) = (n-r-j)/(n-1-j).
    best = s == s.min()
    start, n, r = int(s.min()), int(e[best][0] - s.min()), int(best.sum())
    j = np.arange(n - r + 1, dtype=np.float64)
    p = r / n * np.cumprod(np.r_[1.0, (n - r - j[:-1]) / (n - 1 - j[:-1])])
    out["mrr"] = float((p / (start + j + 1)).sum())
    return out


def mean_graded_metrics(queries: Iterable[tuple[np.ndarray, Mapping[int, float]]], ks: Iterable[int]) -> dict[str, float]:
    """Means of `graded_metrics` over (scores, relevance) queries, plus their number ("queries")."""
    ks = sorted(ks)
    rows = [graded_metrics(scores, relevance, ks) for scores, relevance in queries]
    keys = [f"{m}@{k}" for k in ks for m in ("ndcg", "recall")] + ["mrr"]
    out = {key: float(np.mean([row[key] for row in rows])) if rows else float("nan") for key in keys}
    return {**out, "queries": len(rows)}


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative), ties counting one half
    (the module's tie rule: a random order puts the positive first half the time).

    Computed from average ranks (Mann-Whitney U), so it is exact with ties. NaN when one class is absent.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # Average 1-based rank within each group of equal scores.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + 1 + e) / 2
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Group AUC: per-user AUC weighted by the user's impressions; users with one class only are skipped."""
    labels, scores, groups = np.asarray(labels), np.asarray(scores), np.asarray(groups)
    total, weight = 0.0, 0
    for g in np.unique(groups):
        sel = groups == g
        value = auc(labels[sel], scores[sel])
        if not np.isnan(value):
            total += value * sel.sum()
            weight += int(sel.sum())
    return float(total / weight) if weight else float("nan")


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy -y log p - (1-y) log(1-p), with p clipped to [eps, 1-eps]."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())



def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = 20) -> list[dict]:
    """Equal-count bins of the predictions (sorted): per bin the mean predicted probability, the
    observed click rate and the count. Equal-count, not equal-width: click rates of a few percent
    would put nearly every prediction in the first of ten equal-width bins and hide any miscalibration."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    order = np.argsort(p, kind="mergesort")
    return [{"predicted": float(p[b].mean()), "observed": float(y[b].mean()), "count": int(len(b))}
            for b in np.array_split(order, min(bins, max(len(p), 1))) if len(b)]


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 20) -> float:
    """ECE = Σ_bins (count / n) · |mean predicted − observed rate| over equal-count bins (reliability_bins)."""
    parts = reliability_bins(labels, probs, bins)
    n = sum(b["count"] for b in parts)
    return float(sum(b["count"] * abs(b["predicted"] - b["observed"]) for b in parts) / n) if n else float("nan")

# ---- demand forecasts (recsys.forecast) ----------------------------------------------------------
QUANTILES = (0.1, 0.5, 0.9)  # P10, P50, P90: the columns p10, p50, p90 of every forecast


def pinball(actual: np.ndarray, predicted: np.ndarray, q: float) -> np.ndarray:
    """Per-row quantile (pinball) loss of the q-quantile forecast."""
    diff = np.asarray(actual, dtype=np.float64) - np.asarray(predicted, dtype=np.float64)
    return np.maximum(q * diff, (q - 1) * diff)


def forecast_metrics(rows) -> dict[str, float]:
    """Point and quantile accuracy of forecast rows (a DataFrame: unique_id, y, p10, p50, p90,
    scale = the series' in-sample MAE of the seasonal naive forecast, NaN or 0 where it has none).

    wape      Σ|y − P50| / Σy over every row (units-weighted: big sellers count more)
    mase      per series (and origin, when the rows carry one), the MAE of P50 over its scale, then the
              mean over those with a scale > 0
              (< 1: better than the seasonal naive forecast was in-sample; Hyndman & Koehler 2006)
    pinball   mean pinball loss of P10, P50 and P90, over the mean of y (scale-free)
    coverage_p10_p90   share of rows with P10 ≤ y ≤ P90 (0.8 for calibrated quantiles)
    """
    y = rows["y"].to_numpy(dtype=np.float64)
    total = y.sum()
    out = {"rows": int(len(rows)), "series": int(rows["unique_id"].nunique()), "units": float(total)}
    if not len(rows):
        return out | {"wape": float("nan"), "mase": float("nan"), "pinball": float("nan"), "coverage_p10_p90": float("nan")}
    abs_err = np.abs(y - rows["p50"].to_numpy(dtype=np.float64))
    losses = np.mean([pinball(y, rows[f"p{round(q * 100)}"].to_numpy(), q).mean() for q in QUANTILES])
    # A series' scale belongs to the history it was fitted on: one per origin when rows pool several.
    keys = ["unique_id", "origin"] if "origin" in rows else ["unique_id"]
    per_series = rows.assign(abs_err=abs_err).groupby(keys).agg(mae=("abs_err", "mean"), scale=("scale", "first"))
    scaled = per_series[per_series["scale"] > 0]
    out |= {
        "wape": float(abs_err.sum() / total) if total > 0 else float("nan"),
        "mase": float((scaled["mae"] / scaled["scale"]).mean()) if len(scaled) else float("nan"),
        "mase_series": int(len(scaled)),
        "pinball": float(losses / max(y.mean(), 1e-12)),
        "coverage_p10_p90": float(np.mean((rows["p10"].to_numpy() <= y) & (y <= rows["p90"].to_numpy()))),
    }
    return out
