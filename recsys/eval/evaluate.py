"""Leave-one-out evaluation with full ranking over all items, model and popularity side by side."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from recsys.config import EvalConfig, RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.eval.metrics import hit_and_ndcg, target_ranks

# Published full-ranking anchors on the same Beauty file (S3-Rec paper; shared/datasets/README.md).
BEAUTY_ANCHORS = {
    "PopRec": {"hr@5": 0.0080, "ndcg@5": 0.0044, "hr@10": 0.0152, "ndcg@10": 0.0068, "hr@20": 0.0217, "ndcg@20": 0.0084},
    "SASRec": {"hr@5": 0.0387, "ndcg@5": 0.0249, "hr@10": 0.0605, "ndcg@10": 0.0318, "hr@20": 0.0902, "ndcg@20": 0.0394},
    "S3-Rec": {"hr@5": 0.0387, "ndcg@5": 0.0244, "hr@10": 0.0647, "ndcg@10": 0.0327, "hr@20": 0.0994, "ndcg@20": 0.0414},
}


def protocol(eval_cfg: EvalConfig) -> dict:
    return {
        "split": eval_cfg.split,
        "protocol": "leave-one-out",
        "ranking": "full (all items, no sampled negatives)",
        "exclude_history": eval_cfg.exclude_history,
        "note": "history items other than the target are removed from the ranking (S3-Rec full-sort)"
        if eval_cfg.exclude_history
        else "history items stay in the ranking",
    }


def _rank_all(score_fn, split, eval_cfg: EvalConfig) -> np.ndarray:
    ranks = []
    histories, targets = split["history"].tolist(), np.array(split["target"], dtype=np.int64)
    for start in range(0, len(targets), eval_cfg.batch_size):
        hist = [list(h) for h in histories[start : start + eval_cfg.batch_size]]
        scores = score_fn(hist)
        tgt = torch.as_tensor(targets[start : start + eval_cfg.batch_size], dtype=torch.long)
        ranks.append(target_ranks(scores, tgt, hist if eval_cfg.exclude_history else None).numpy())
    return np.concatenate(ranks) if ranks else np.zeros(0)


def evaluate_model(model, split, eval_cfg: EvalConfig) -> dict[str, float]:
    model.eval()
    return hit_and_ndcg(_rank_all(model.score_histories, split, eval_cfg), eval_cfg.ks)


def popularity_scores(dataset: PreparedDataset) -> torch.Tensor:
    """Train-split interaction counts per item index (pad and [MASK] can never win)."""
    items = dataset.items()
    scores = torch.full((dataset.num_items + 2,), float("-inf"))
    index = torch.tensor(np.array(items["item_index"], dtype=np.int64))
    scores[index] = torch.tensor(np.array(items["train_count"], dtype=np.float32))
    return scores


def evaluate_popularity(dataset: PreparedDataset, split, eval_cfg: EvalConfig) -> dict[str, float]:
    pop = popularity_scores(dataset)
    score_fn = lambda hist: pop.expand(len(hist), -1)  # noqa: E731
    return hit_and_ndcg(_rank_all(score_fn, split, eval_cfg), eval_cfg.ks)


def run_evaluation(cfg: RecsysConfig, model_path: Path, dataset: PreparedDataset) -> dict:
    """Evaluate the exported model and the popularity baseline; write report.json beside it."""
    from recsys.models import SeqRecModel

    t0 = time.perf_counter()
    model = SeqRecModel.from_pretrained(model_path)
    split = dataset.read_split(cfg.eval.split)
    metrics = evaluate_model(model, split, cfg.eval)
    seconds = time.perf_counter() - t0
    report = {
        "model": str(model_path),
        "dataset": f"{dataset.manifest['name']}/{dataset.manifest['version']}",
        "users": int(dataset.manifest["counts"][f"{cfg.eval.split}_rows"]),
        "num_items": dataset.num_items,
        "protocol": protocol(cfg.eval),
        "metrics": {"model": metrics, "popularity": evaluate_popularity(dataset, split, cfg.eval)},
        "published_anchors": BEAUTY_ANCHORS if dataset.manifest["source"]["kind"] == "beauty" else {},
        "eval_seconds": round(seconds, 1),
    }
    out = cfg.artifacts_root / "reports" / cfg.run_name / model_path.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    report["path"] = str(out / "report.json")
    return report


def format_report(report: dict) -> str:
    ks = sorted({int(k.split("@")[1]) for k in report["metrics"]["model"] if "@" in k})
    cols = [f"{m}@{k}" for k in ks for m in ("hr", "ndcg")]
    rows = [("ours", report["metrics"]["model"]), ("popularity (same harness)", report["metrics"]["popularity"])]
    rows += [(f"{name} (published)", vals) for name, vals in report["published_anchors"].items()]
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{report['dataset']}: {report['users']} users, {report['num_items']} items, {report['protocol']['ranking']}",
             "model".ljust(width) + "".join(c.rjust(10) for c in cols)]
    for name, vals in rows:
        lines.append(name.ljust(width) + "".join(f"{vals.get(c, float('nan')):10.4f}" for c in cols))
    return "\n".join(lines)
