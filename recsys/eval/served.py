"""Offline evaluation of the served path: the split replayed through the same OnlineEngine a
replica runs (ANN retrieval over the version's index, the CTR ranker when the version has one,
history excluded as `serve.exclude_history` says), so the report shows what users would get
beside the model's full-ranking figures.

Each test row is a request with the row's history and no live events, at a fixed context (hour 0,
weekday 0: the splits carry no request time). The engine answers the top max(eval.ks) items; a
target outside them scores 0 at every k, so only the @k metrics are reported (no whole-ranking MRR).
Serving drops every item of the history (`serve.exclude_history`) where the S3-Rec protocol keeps
a target the user saw before, so on logs with repeats the served figures are lower by design. With
a flat index, the retrieval ranker and the same history rule, they equal the full-ranking figures
(a test checks).
"""

from __future__ import annotations

import numpy as np

from recsys.config import EvalConfig
from recsys.eval.metrics import ranking_metrics
from recsys.online.engine import OnlineEngine, Recommendation, UserState, context_of


def evaluate_engine(engine: OnlineEngine, split, eval_cfg: EvalConfig, batch_size: int = 256) -> dict[str, float]:
    """HR/NDCG/MRR @ each of eval.ks of the engine's answers to the split's rows (a DataFrame with
    `history` and `target` item indices)."""
    ks = [k for k in eval_cfg.ks if k <= engine.spec.serve.max_k]  # the served answer is at most serve.max_k long
    if not ks:
        raise ValueError(f"every eval.ks {eval_cfg.ks} is above serve.max_k {engine.spec.serve.max_k}: nothing served to score")
    k = max(ks)
    histories = [[int(i) for i in h] for h in split["history"]]
    targets = np.asarray(split["target"], dtype=np.int64)
    counts = np.zeros((len(targets), 2), dtype=np.int64)  # (higher, tied) per row, as metrics expects
    context = context_of(0, 0)
    for start in range(0, len(targets), batch_size):
        rows = range(start, min(start + batch_size, len(targets)))
        jobs = [engine.prepare_recommend(UserState(histories[r], set(), context), k, None) for r in rows]
        ranked = [j for j in jobs if not isinstance(j, Recommendation)]
        if ranked:
            engine.run_recommend(ranked)
        for r, job in zip(rows, jobs, strict=True):
            answer = [s.index for s in job.items] if isinstance(job, Recommendation) else [i for i, _, _ in job.results]
            counts[r, 0] = answer.index(targets[r]) if targets[r] in answer else k  # a miss: beyond every cutoff
    metrics = ranking_metrics(counts, ks)
    return {name: value for name, value in metrics.items() if "@" in name}


def served_protocol(engine: OnlineEngine) -> str:
    return (f"served: {engine.manifest['kind']} index {engine.version}, {engine.ranker_name} ranker over "
            f"{engine.spec.serve.candidates} candidates, top-k answers, fixed context")
