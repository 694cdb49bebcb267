"""Ranking metrics over full-catalog scores."""

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
    """HR@K = share of targets ranked in the top K; NDCG@K with one relevant item = 1/log2(rank+2)."""
    ranks = np.asarray(ranks)
    out: dict[str, float] = {}
    for k in sorted(ks):
        hit = ranks < k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float((hit / np.log2(ranks + 2.0)).mean())
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out
