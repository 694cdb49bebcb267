"""Ranking metrics over full-catalog scores (HR, NDCG, MRR) and CTR metrics (AUC, GAUC, log-loss)."""

from __future__ import annotations

import numpy as np
import torch


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: list[list[int]] | None = None) -> torch.Tensor:
    """0-based rank of each target among all items. (B, N+2) scores, (B,) targets → (B,).

    `exclude`: per-row item indices removed from the ranking (the user's history); the target
    itself is never removed. Ties are broken by item index (as a stable sort would), so a model
    that scores everything equal does not get a free hit.
    """
    rows = torch.arange(len(targets))
    target_scores = scores[rows, targets].clone()
    scores = scores.clone()
    if exclude is not None:
        for row, items in enumerate(exclude):
            if len(items):
                scores[row, torch.as_tensor(list(items), dtype=torch.long)] = float("-inf")
    scores[rows, targets] = target_scores  # restore the target if it was in the history
    higher = (scores > target_scores[:, None]).sum(1)
    index = torch.arange(scores.shape[1])[None]
    tied_before = ((scores == target_scores[:, None]) & (index < targets[:, None])).sum(1)
    return higher + tied_before


def hit_and_ndcg(ranks: np.ndarray, ks: list[int]) -> dict[str, float]:
    """HR@K = share of targets ranked in the top K; NDCG@K with one relevant item = 1/log2(rank+2);
    MRR@K = mean 1/(rank+1) over targets in the top K (0 outside); MRR over the whole ranking."""
    ranks = np.asarray(ranks)
    out: dict[str, float] = {}
    for k in sorted(ks):
        hit = ranks < k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float((hit / np.log2(ranks + 2.0)).mean())
        out[f"mrr@{k}"] = float((hit / (ranks + 1.0)).mean())
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative), ties counting one half.

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
