"""Domain adaptation of the search encoder without labelled queries: contrastive fine-tuning (the
search task of the one training loop) on pseudo-queries made from the catalog itself
(recsys.search.pseudo_queries), for a catalog whose logs hold no searches.

Safeguard: the pseudo-queries of `search.adapt.holdout` of the items never reach training. Before
the adapted encoder is published, the pretrained and the adapted encoder both rank those queries
(dense, among every item, or the held-out items plus `pool_max` others); the export records both
nDCG@10 and `ship`, and the index uses the adapted encoder only when it scored at least as well.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys.config import RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.search.encoder import row_text
from recsys.search.pseudo_queries import training_queries

SOURCE = "catalog pseudo-queries"


def catalog_rows(dataset: PreparedDataset) -> list[dict]:
    columns = ["item_index", "item_id", "title", "category", "brand", "attributes"]
    return pq.read_table(dataset.path / "items.parquet", columns=columns).sort_by("item_index").to_pylist()


def split_pairs(cfg: RecsysConfig, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(training pairs, held-out pairs) with item texts; held-out items are drawn by the seed."""
    a = cfg.search.adapt
    rng = np.random.default_rng([cfg.search.train.seed, 7])
    held = set(rng.choice([r["item_index"] for r in rows], size=max(1, int(len(rows) * a.holdout)), replace=False).tolist())
    texts = {r["item_index"]: row_text(r) for r in rows}
    pairs = [{**p, "text": texts[p["item"]]} for p in training_queries(rows, a.queries_per_item, cfg.search.train.seed)]
    return [p for p in pairs if p["item"] not in held], [p for p in pairs if p["item"] in held]


def dense_ndcg(encoder_path: Path | None, rows: list[dict], held_out: list[dict], cfg: RecsysConfig) -> float:
    """Dense nDCG@10 of the held-out pseudo-queries (recsys.eval.metrics), among the pool."""
    from recsys.eval.metrics import mean_graded_metrics
    from recsys.search.encoder import TextEncoder

    a = cfg.search.adapt
    held_items = sorted({p["item"] for p in held_out})
    others = [r["item_index"] for r in rows if r["item_index"] not in set(held_items)]
    if len(rows) > len(held_items) + a.pool_max:
        others = np.random.default_rng([cfg.search.train.seed, 8]).choice(others, size=a.pool_max, replace=False).tolist()
    pool = held_items + sorted(others)
    position = {item: i for i, item in enumerate(pool)}
    texts = {r["item_index"]: row_text(r) for r in rows}
    encoder = TextEncoder(encoder_path)
    items = encoder.encode([texts[i] for i in pool], max_tokens=cfg.search.max_tokens).numpy()
    queries = encoder.encode([p["query"] for p in held_out], max_tokens=cfg.search.max_tokens).numpy()
    runs = ((items @ q, {position[p["item"]]: 1.0}) for q, p in zip(queries, held_out, strict=True))
    return float(mean_graded_metrics(runs, (10,))["ndcg@10"])


def adapt_encoder(cfg: RecsysConfig, dataset: PreparedDataset, fault: dict | None = None):
    """Fine-tune the bundled MiniLM on the catalog's pseudo-queries and publish it under
    models/<run>/search/<version>, its safeguard in the export's `extra`. A StageResult."""
    from recsys.search.encoder import pretrained_path
    from recsys.search.train import SearchEncoderTask
    from recsys.train.trainer import fit_and_publish

    rows = [r for r in catalog_rows(dataset) if r.get("title")]
    train, held_out = split_pairs(cfg, rows)
    need = cfg.cluster.train_workers * cfg.search.train.batch_size
    if len(train) < need:
        raise ValueError(f"{dataset.path}: {len(train)} pseudo-queries from {len(rows)} titled items, fewer than one step "
                         f"needs ({cfg.cluster.train_workers} workers × search.train.batch_size {cfg.search.train.batch_size}); "
                         "raise search.adapt.queries_per_item or lower the batch size")
    baseline = dense_ndcg(None, rows, held_out, cfg)

    def vet(folder: Path) -> dict:
        adapted = dense_ndcg(folder, rows, held_out, cfg)
        return {"safeguard": {"held_out_queries": len(held_out), "metric": "dense ndcg@10",
                              "pretrained": baseline, "adapted": adapted, "ship": adapted >= baseline}}

    task = SearchEncoderTask(cfg, dataset, train, pretrained_path(), source=SOURCE)
    return fit_and_publish(cfg, task, dataset, fault=fault, vet=vet,
                           extra={"pairs": len(train), "source": SOURCE, "queries_per_item": cfg.search.adapt.queries_per_item})
