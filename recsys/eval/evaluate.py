"""Leave-one-out evaluation with full ranking over all items, model and popularity side by side."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from recsys.artifacts import IndexRelease, ModelExport
from recsys.config import EvalConfig, RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.eval.metrics import ranking_metrics, tie_counts

# Published full-ranking anchors on the same Beauty file (S3-Rec paper; shared/datasets/README.md).
BEAUTY_ANCHORS = {
    "PopRec": {"hr@5": 0.0080, "ndcg@5": 0.0044, "hr@10": 0.0152, "ndcg@10": 0.0068, "hr@20": 0.0217, "ndcg@20": 0.0084},
    "SASRec": {"hr@5": 0.0387, "ndcg@5": 0.0249, "hr@10": 0.0605, "ndcg@10": 0.0318, "hr@20": 0.0902, "ndcg@20": 0.0394},
    "S3-Rec": {"hr@5": 0.0387, "ndcg@5": 0.0244, "hr@10": 0.0647, "ndcg@10": 0.0327, "hr@20": 0.0994, "ndcg@20": 0.0414},
    # TIGER (NeurIPS 2023) reports Recall@K, which equals HR@K with one target per user.
    "TIGER": {"hr@5": 0.0454, "ndcg@5": 0.0321, "hr@10": 0.0648, "ndcg@10": 0.0384},
    "SASRec, full CE (well tuned)": {"hr@10": 0.085, "ndcg@10": 0.043},
    "BSARec (best reported)": {"hr@5": 0.0736, "ndcg@5": 0.0523, "hr@10": 0.1008, "ndcg@10": 0.0611, "hr@20": 0.1373,
                               "ndcg@20": 0.0703},
}


def protocol(eval_cfg: EvalConfig) -> dict:
    sampled = eval_cfg.sampled_negatives
    return {
        "split": eval_cfg.split,
        "protocol": "leave-one-out",
        "ranking": f"sampled ({sampled} popularity-sampled negatives per user; NOT comparable with full ranking)"
        if sampled
        else "full (all items, no sampled negatives)",
        "exclude_history": eval_cfg.exclude_history,
        "note": "history items other than the target are removed from the ranking (S3-Rec full-sort)"
        if eval_cfg.exclude_history
        else "history items stay in the ranking (labelled: not the S3-Rec protocol)",
        "ties": "broken uniformly at random: each metric is its exact expectation (McSherry & Najork 2008)",
    }


def sample_negatives(
    pop: np.ndarray, histories: list, targets: np.ndarray, n: int, exclude_history: bool, rng: np.random.Generator
) -> np.ndarray:
    """(B, n) item indices drawn ∝ train popularity, never the target (nor, with exclude_history, a history item)."""
    p = np.where(np.isfinite(pop), pop + 1.0, 0.0)
    p /= p.sum()
    out = np.empty((len(targets), n), dtype=np.int64)
    for row, (hist, target) in enumerate(zip(histories, targets, strict=True)):
        banned = {int(target), *(map(int, hist) if exclude_history else ())}
        picked: list[int] = []
        while len(picked) < n:
            draw = rng.choice(len(p), size=2 * n, p=p)
            picked.extend(int(i) for i in draw if int(i) not in banned)
        out[row] = picked[:n]
    return out


def count_rows(score_fn, histories: list, targets: np.ndarray, eval_cfg: EvalConfig, negatives=None) -> np.ndarray:
    """(B, 2) (higher, tied) counts of each target (recsys/eval/metrics.py): among all items (full,
    the history excluded when `eval_cfg.exclude_history`), or among its sampled `negatives` (B, S)
    — the same tie rule in both modes."""
    hist = [list(h) for h in histories]
    scores = score_fn(hist)  # (B, N + 2)
    tgt = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=scores.device)
    if negatives is None:
        return tie_counts(scores, tgt, hist if eval_cfg.exclude_history else None)
    neg = torch.as_tensor(negatives, dtype=torch.long, device=scores.device)
    # (B, 1 + S): the target in column 0, its negatives after it (never history, never the target).
    sampled = torch.cat([scores.gather(1, tgt[:, None]), scores.gather(1, neg)], 1)
    return tie_counts(sampled, torch.zeros_like(tgt))


def _count_all(score_fn, split, eval_cfg: EvalConfig, pop: np.ndarray | None = None) -> np.ndarray:
    counts = []
    histories, targets = split["history"].tolist(), np.array(split["target"], dtype=np.int64)
    rng = np.random.default_rng(eval_cfg.seed)
    for start in range(0, len(targets), eval_cfg.batch_size):
        hist, tgt = histories[start : start + eval_cfg.batch_size], targets[start : start + eval_cfg.batch_size]
        negatives = None
        if eval_cfg.sampled_negatives:
            negatives = sample_negatives(pop, hist, tgt, eval_cfg.sampled_negatives, eval_cfg.exclude_history, rng)
        counts.append(count_rows(score_fn, hist, tgt, eval_cfg, negatives))
    return np.concatenate(counts) if counts else np.zeros((0, 2), dtype=np.int64)


def evaluate_model(model, split, eval_cfg: EvalConfig, pop: np.ndarray | None = None) -> dict[str, float]:
    """`pop` (train counts per index) is needed only for sampled negatives; the same seed gives every
    model the same negatives."""
    model.eval()
    return ranking_metrics(_count_all(model.score_histories, split, eval_cfg, pop), eval_cfg.ks)


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
    # Integer counts tie a lot: the tie rule gives a tied target the mean of the tied positions.
    return ranking_metrics(_count_all(score_fn, split, eval_cfg, pop.numpy()), eval_cfg.ks)


def evaluate_ctr(cfg: RecsysConfig, ctr_model_path: Path, dataset: PreparedDataset) -> dict:
    """AUC, GAUC and log-loss of the CTR model on the eval split's impressions, beside two baselines
    in the same harness: item popularity and the retrieval model's own score (u·v, no head)."""
    from recsys.eval.metrics import auc, gauc, log_loss
    from recsys.models import SeqRecForCTR

    model = SeqRecForCTR.from_pretrained(ctr_model_path).eval()
    rows = dataset.ctr_rows(cfg.eval.split).to_pydict()
    labels, users = np.asarray(rows["label"]), np.asarray(rows["user"])
    context = np.stack([rows["hour"], rows["weekday"], rows["session_position"]], axis=1)
    probs, dots = [], []
    for start in range(0, len(labels), cfg.eval.batch_size):
        sl = slice(start, start + cfg.eval.batch_size)
        out = model.score(rows["history"][sl], rows["candidate"][sl], context[sl])  # one encoder pass for both
        probs.append(torch.sigmoid(out.logits).numpy())
        dots.append(out.retrieval_scores.numpy())
    p, dot = np.concatenate(probs), np.concatenate(dots)
    pop = popularity_scores(dataset).numpy()[np.asarray(rows["candidate"])]
    return {
        "impressions": int(len(labels)),
        "click_rate": float(labels.mean()),
        "model": {"auc": auc(labels, p), "gauc": gauc(labels, p, users), "log_loss": log_loss(labels, p)},
        "retrieval_score": {"auc": auc(labels, dot), "gauc": gauc(labels, dot, users)},
        "popularity": {"auc": auc(labels, pop), "gauc": gauc(labels, pop, users)},
        "constant_click_rate_log_loss": log_loss(labels, np.full(len(labels), labels.mean())),
    }


def run_evaluation(cfg: RecsysConfig, export: ModelExport, ranker: ModelExport | None = None,
                   release: IndexRelease | None = None) -> dict:
    """Evaluate the exported model on the dataset it was trained on, beside the popularity baseline
    (and the CTR model when there is one, and the served path when an index version of this model
    is given: recsys.eval.served); write report.json beside it."""
    from recsys.models import SeqRecModel

    model_path, dataset = export.path, export.dataset()
    ctr_model_path = ranker.path if ranker is not None else None
    t0 = time.perf_counter()
    model = SeqRecModel.from_pretrained(model_path)
    split = dataset.read_split(cfg.eval.split)
    segments = None
    if not cfg.eval.sampled_negatives:  # known and cold targets, long tail, short histories (full ranking)
        from recsys.eval.segments import segment_report

        segments = segment_report(cfg, model, dataset)
    if segments is not None and segments["candidates"]["cold"] == 0:
        # no cold item (leave-one-out): the known segment is this very ranking; do not score it twice
        metrics, popular = ({k: v for k, v in segments[name]["known"].items() if k != "rows"} for name in ("model", "popularity"))
    else:
        metrics = evaluate_model(model, split, cfg.eval, popularity_scores(dataset).numpy())
        popular = evaluate_popularity(dataset, split, cfg.eval)
    seconds = time.perf_counter() - t0
    report = {
        "model": str(model_path),
        "dataset": f"{dataset.manifest['name']}/{dataset.manifest['version']}",
        "users": int(dataset.manifest["counts"][f"{cfg.eval.split}_rows"]),
        "num_items": dataset.num_items,
        "protocol": protocol(cfg.eval),
        "metrics": {"model": metrics, "popularity": popular},
        "published_anchors": BEAUTY_ANCHORS if dataset.manifest["source"]["kind"] == "beauty" else {},
        "eval_seconds": round(seconds, 1),
        "training": _training_summary(export),
    }
    if segments is not None:
        report["segments"] = segments
    if ctr_model_path is not None:
        report["ctr"] = {"model": str(ctr_model_path), **evaluate_ctr(cfg, ctr_model_path, dataset)}
    if release is not None and not cfg.eval.sampled_negatives:
        from recsys.eval.served import evaluate_engine, served_protocol
        from recsys.online.engine import EngineSpec, OnlineEngine

        spec = EngineSpec.of(cfg)  # recommendation only: the text index is not needed
        spec = spec.model_copy(update={"search": spec.search.model_copy(update={"enabled": False})})
        try:
            engine = OnlineEngine(release, spec)
            report["metrics"]["served"] = evaluate_engine(engine, split, cfg.eval)
            report["protocol"]["served"] = served_protocol(engine)
        except (ValueError, RuntimeError) as exc:  # the offline figures stand; say why the served ones are missing
            report["served_error"] = f"{type(exc).__name__}: {exc}"
    out = cfg.artifacts_root / "reports" / cfg.run_name / model_path.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    report["path"] = str(out / "report.json")
    return report


def _training_summary(export: ModelExport) -> dict:
    """Learning curves of the evaluated model and of the pretraining it started from."""
    meta = export.meta
    out = {"finetune": {"exported_epoch": meta.exported_epoch, "selected_by": meta.selected_by,
                        "final_epoch": meta.final_epoch, "stopped_early": meta.stopped_early, "history": meta.history}}
    if export.init_from is not None:
        out["pretrain"] = {"history": ModelExport.load(export.init_from).meta.history}
    return out


def format_report(report: dict) -> str:
    ks = sorted({int(k.split("@")[1]) for k in report["metrics"]["model"] if "@" in k})
    cols = [f"{m}@{k}" for k in ks for m in ("hr", "ndcg")]
    rows = [("ours", report["metrics"]["model"]), ("popularity (same harness)", report["metrics"]["popularity"])]
    if "served" in report["metrics"]:  # the same model through the served engine (ANN + ranker), top-k answers
        rows.insert(1, ("ours, as served", report["metrics"]["served"]))
    rows += [(f"{name} (published)", vals) for name, vals in report["published_anchors"].items()]
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{report['dataset']}: {report['users']} users, {report['num_items']} items, {report['protocol']['ranking']}",
             "model".ljust(width) + "".join(c.rjust(10) for c in cols)]
    for name, vals in rows:
        lines.append(name.ljust(width) + "".join(f"{vals.get(c, float('nan')):10.4f}" for c in cols))
    if "segments" in report:
        lines += ["", format_segments(report["segments"])]
    return "\n".join(lines)


def format_segments(segments: dict) -> str:
    """HR@10 / NDCG@10 per segment (recsys/eval/segments.py) of the model and its baselines."""
    from recsys.eval.segments import SEGMENTS

    cand = segments["candidates"]
    lines = [f"by segment, over {cand['known']} known + {cand['cold']} cold items (HR@10 / NDCG@10):",
             "".ljust(16) + "".join(f"{s} ({segments['model'][s]['rows']})".rjust(24) for s in SEGMENTS)]
    for name in ("model", "newest_popular", "popularity"):
        if name in segments:
            cells = "".join((f"{v['hr@10']:.4f} / {v['ndcg@10']:.4f}" if "hr@10" in v else "—").rjust(24)
                            for v in (segments[name][s] for s in SEGMENTS))
            lines.append(name.ljust(16) + cells)
    if segments.get("cannot_rank_cold"):
        lines.append("an id-only model cannot rank items the training period never saw: its cold figures are zero")
    return "\n".join(lines)
