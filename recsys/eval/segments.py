"""Evaluation by segment, over every product the shop sells: known and cold items together.

The rows of a split are its known-target rows plus, under a time split, its cold-target rows
(recsys/data/cold.py). Every scorer ranks the same candidates: the N vocabulary items and the M
cold items (extended indices N + 2 + k). A model scores a cold item with `ItemEmbedding.content`
(attributes + projected text, no id embedding), the vector `POST /items` gives a new product at
serving time; an id-only model has no such vector, so it cannot rank unseen items: their scores
are -inf and its cold figures are its (zero) hits, reported with `cannot_rank_cold`.

Segments (one figure set each): all, known, cold (targets the training period never saw),
long_tail (known targets in the bottom half of the vocabulary by train count), short_history (rows
with at most `eval.short_history_max` history items). Baselines in the same harness: popularity
(train counts) and, under a time split, newest-popular (the items first sold in the
`eval.recent_days` before the split's cut, cold items included, by their sales in that window;
then the rest by the same count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from recsys.config import EvalConfig, RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.eval.metrics import ranking_metrics, tie_counts

SEGMENTS = ("all", "known", "cold", "long_tail", "short_history")
# Cold targets ranked among the cold items alone: how well a "new arrivals" shelf is ordered.
AMONG_NEW = "cold_among_new"


@dataclass
class SegmentRows:
    """The rows of one split, scored over N + 2 + M columns."""

    history: list[list[int]]
    target: np.ndarray  # extended item indices
    masks: dict[str, np.ndarray]  # segment → (rows,) bool
    num_items: int
    num_cold: int


def segment_rows(dataset: PreparedDataset, split: str, eval_cfg: EvalConfig) -> SegmentRows:
    known, cold = dataset.read_split(split), dataset.cold_targets(split)
    history = [list(map(int, h)) for h in known["history"]] + [list(map(int, h)) for h in cold["history"]]
    target = np.concatenate([np.asarray(known["target"], np.int64), np.asarray(cold["target"], np.int64)])
    is_cold = np.r_[np.zeros(len(known), bool), np.ones(len(cold), bool)]
    items = dataset.items()
    counts = np.zeros(dataset.num_items + 2)
    counts[np.asarray(items["item_index"])] = np.asarray(items["train_count"])
    # bottom half of the vocabulary by train count (ties by index, so the half is exactly half)
    order = np.lexsort((np.asarray(items["item_index"]), np.asarray(items["train_count"])))
    tail = np.zeros(dataset.num_items + 2 + dataset.num_cold_items, bool)
    tail[np.asarray(items["item_index"])[order[: len(order) // 2]]] = True
    lengths = np.asarray([len(h) for h in history])
    masks = {"all": np.ones(len(target), bool), "known": ~is_cold, "cold": is_cold,
             "long_tail": ~is_cold & tail[target], "short_history": lengths <= eval_cfg.short_history_max}
    return SegmentRows(history, target, masks, dataset.num_items, dataset.num_cold_items)


def model_scorer(model, dataset: PreparedDataset, cold_text: np.ndarray | None, max_attributes: int):
    """history batch → (B, N + 2 + M) scores: the vocabulary as the model scores it, then the cold
    items by their content vectors (or -inf for an id-only model)."""
    items = model.items
    cold_attrs = torch.as_tensor(dataset.cold_attribute_matrix(max_attributes))
    with torch.no_grad():
        if not items.has_content or len(cold_attrs) == 0:
            cold_vectors = None
        else:
            text = torch.as_tensor(cold_text, dtype=torch.float32) if items.use_text else None
            cold_vectors = items.content(cold_attrs, text)

    def score(histories: list[list[int]]) -> torch.Tensor:
        with torch.no_grad():
            states = model.user_vectors(histories)
            known = model.item_logits(states)
            if cold_vectors is None:
                return torch.cat([known, torch.full((len(histories), len(cold_attrs)), float("-inf"))], 1)
            return torch.cat([known, states @ cold_vectors.T], 1)

    return score


def popularity_scorer(dataset: PreparedDataset):
    items = dataset.items()
    pop = torch.zeros(dataset.num_items + 2 + dataset.num_cold_items)
    pop[torch.as_tensor(np.asarray(items["item_index"], np.int64))] = torch.as_tensor(np.asarray(items["train_count"], np.float32))
    pop[0] = pop[dataset.num_items + 1] = float("-inf")
    return lambda histories: pop.expand(len(histories), -1)


def newest_popular_scorer(dataset: PreparedDataset, split: str, kinds: list[str], recent_days: int):
    """The newest popular items first: items whose first interaction falls in the `recent_days`
    before the split's cut (new arrivals, cold items included), ranked by their interactions in
    that window; then every other item by the same count. None under leave-one-out (no global cut)."""
    meta = dataset.manifest["split"]
    if meta["protocol"] != "time":
        return None
    cut = meta["valid_cutoff_ms" if split == "valid" else "test_cutoff_ms"]
    events = pq.read_table(dataset.split_dir("events"), columns=["item_id", "event_type", "timestamp"])
    ts = events["timestamp"].cast(pa.int64())
    keep = pc.and_(pc.is_in(events["event_type"], value_set=pa.array(kinds)), pc.less(ts, cut))
    events, t = events.filter(keep), ts.filter(keep).to_numpy()
    items, cold = dataset.items(), dataset.cold_items()
    ids = pa.concat_arrays([pa.array(items["item_id"], pa.string()), pa.array(cold["item_id"], pa.string())])
    index = np.r_[np.asarray(items["item_index"], np.int64), np.asarray(cold["item_index"], np.int64)]
    pos = pc.index_in(events["item_id"], value_set=ids).to_numpy(zero_copy_only=False)
    size = dataset.num_items + 2 + len(cold)
    start = cut - recent_days * 86_400_000
    recent = np.zeros(size)
    np.add.at(recent, index[pos[t >= start]], 1.0)
    first = np.full(size, np.iinfo(np.int64).max)
    np.minimum.at(first, index[pos], t)
    arrival = (first >= start) & (first < cut)
    scores = torch.as_tensor(recent + arrival * (recent.max() + 1.0), dtype=torch.float32)
    scores[0] = scores[dataset.num_items + 1] = float("-inf")
    return lambda histories: scores.expand(len(histories), -1)


def row_counts(score_fn, rows: SegmentRows, eval_cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray]:
    """(higher, tied) per row over every candidate, history excluded as eval.exclude_history says;
    and per cold row among the cold items alone."""
    counts, among_new = [], []
    first_cold = rows.num_items + 2
    for start in range(0, len(rows.target), eval_cfg.batch_size):
        hist = rows.history[start : start + eval_cfg.batch_size]
        target = rows.target[start : start + eval_cfg.batch_size]
        scores = score_fn(hist)
        counts.append(tie_counts(scores, target, hist if eval_cfg.exclude_history else None))
        cold = target >= first_cold
        if cold.any():  # histories hold known items only: nothing to exclude among the cold ones
            among_new.append(tie_counts(scores[torch.as_tensor(cold)][:, first_cold:], target[cold] - first_cold))
    empty = np.zeros((0, 2), np.int64)
    return (np.concatenate(counts) if counts else empty), (np.concatenate(among_new) if among_new else empty)


def evaluate_segments(score_fn, rows: SegmentRows, eval_cfg: EvalConfig) -> dict[str, dict]:
    """segment → {rows, hr@k, ndcg@k, mrr} of one scorer."""
    counts, new = row_counts(score_fn, rows, eval_cfg)
    out = {}
    for name in SEGMENTS:
        mask = rows.masks[name]
        out[name] = {"rows": int(mask.sum()), **(ranking_metrics(counts[mask], eval_cfg.ks) if mask.any() else {})}
    if len(new):
        out[AMONG_NEW] = {"rows": len(new), "candidates": rows.num_cold, **ranking_metrics(new, eval_cfg.ks)}
    return out


def per_row(counts: np.ndarray, metric: str) -> np.ndarray:
    """One metric (e.g. "ndcg@10") of each row: what a paired comparison of two models resamples."""
    k = int(metric.split("@")[1])
    return np.asarray([ranking_metrics(c[None], [k])[metric] for c in counts])


def cold_text_for(cfg: RecsysConfig, model, dataset: PreparedDataset) -> np.ndarray | None:
    """The cold items' text vectors from the same artifact the model's own were taken from (text models)."""
    if not model.items.use_text:
        return None
    from recsys.data.text_vectors import item_text_vectors

    return item_text_vectors(cfg.artifacts_root, dataset, model.config.text_max_tokens).cold_table()


def segment_report(cfg: RecsysConfig, model, dataset: PreparedDataset) -> dict:
    """The model and the baselines on every segment of `cfg.eval.split` (full ranking)."""
    eval_cfg, kinds = cfg.eval, list(cfg.data.interaction_events)
    cold_text, max_attributes = cold_text_for(cfg, model, dataset), model.config.max_attributes_per_item
    rows = segment_rows(dataset, eval_cfg.split, eval_cfg)
    model.eval()
    report = {"candidates": {"known": rows.num_items, "cold": rows.num_cold},
              "model": evaluate_segments(model_scorer(model, dataset, cold_text, max_attributes), rows, eval_cfg),
              "popularity": evaluate_segments(popularity_scorer(dataset), rows, eval_cfg),
              "cannot_rank_cold": not model.items.has_content}
    newest = newest_popular_scorer(dataset, eval_cfg.split, kinds, eval_cfg.recent_days)
    if newest is not None:
        report["newest_popular"] = evaluate_segments(newest, rows, eval_cfg)
    return report
