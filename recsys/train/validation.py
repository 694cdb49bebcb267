"""Validation inside the training loop, sharded over the data-parallel ranks.

Every rank scores its share of the valid split in exactly the same number of forward passes (a
rank with no rows left scores a one-item history), because under ZeRO-3 every forward is a
collective: a rank that skipped one would hang the others. The per-row results are gathered, so
every rank computes the same metrics and takes the same early-stopping decision.
"""

from __future__ import annotations

import math

import numpy as np

from recsys.config import EvalConfig


def rank_batches(n_rows: int, rank: int, world: int, batch_size: int) -> list[np.ndarray]:
    """This rank's row indices, split into the same number of batches on every rank."""
    mine = np.array_split(np.arange(n_rows), world)[rank]
    n_batches = max(1, math.ceil(math.ceil(n_rows / world) / batch_size))
    return np.array_split(mine, n_batches)


def _gather(values: np.ndarray) -> np.ndarray:
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, values)
    return np.concatenate(parts)


def next_item_validation(model, valid: dict, eval_cfg: EvalConfig, rank: int, world: int) -> dict[str, float]:
    """Full-ranking HR/NDCG/MRR of the valid targets (same protocol and tie rule as the final evaluation)."""
    from recsys.eval.evaluate import count_rows
    from recsys.eval.metrics import ranking_metrics

    histories, targets = valid["history"], np.asarray(valid["target"], dtype=np.int64)
    counts = []  # (rows, 2) (higher, tied) per valid target: all the metrics need
    for rows in rank_batches(len(targets), rank, world, eval_cfg.batch_size):
        if len(rows) == 0:
            model.score_histories([[1]])  # keep this rank in step with the others' forwards
            continue
        counts.append(count_rows(model.score_histories, [histories[i] for i in rows], targets[rows], eval_cfg))
    all_counts = _gather(np.concatenate(counts) if counts else np.zeros((0, 2), dtype=np.int64))
    return ranking_metrics(all_counts, sorted(set(eval_cfg.ks) | {10}))  # ndcg@10 selects the best epoch


def ctr_validation(model, valid: dict, eval_cfg: EvalConfig, rank: int, world: int) -> dict[str, float]:
    """AUC, GAUC (per user) and log-loss of the click probabilities on valid impressions."""
    from recsys.eval.metrics import auc, gauc, log_loss

    labels, users, probs = [], [], []
    for rows in rank_batches(len(valid["label"]), rank, world, eval_cfg.batch_size):
        if len(rows) == 0:
            model.click_probability([[1]], [1], [[0, 0, 0]])
            continue
        p = model.click_probability([valid["history"][i] for i in rows], valid["candidate"][rows], valid["context"][rows])
        probs.append(p.float().cpu().numpy())
        labels.append(valid["label"][rows])
        users.append(valid["user"][rows])
    cat = lambda xs, dtype: _gather(np.concatenate(xs) if xs else np.zeros(0, dtype))  # noqa: E731
    y, g, p = cat(labels, np.int8), cat(users, np.int64), cat(probs, np.float32)
    return {"auc": auc(y, p), "gauc": gauc(y, p, g), "log_loss": log_loss(y, p), "impressions": int(len(y))}
