"""Domain adaptation of the search encoder without labelled queries: contrastive fine-tuning (the
search task of the one training loop) on pseudo-queries made from the catalog itself
(recsys.search.pseudo_queries), for a catalog whose logs hold no searches.

Safeguard: `search.adapt.holdout` of the catalog's titles (every item with the same title goes to
the same side, so no twin of a held-out item is trained on) never reach training. Before the
adapted encoder is published, the pretrained and the adapted encoder both rank shopper-style
queries made from the held-out items (the other generator of recsys.search.pseudo_queries; every
same-titled item relevant; at most `MAX_HELD_OUT_QUERIES`), dense, among every catalog item or the
held-out items plus `pool_max` others. The export records both nDCG@10 and `ship`, and the index
uses the adapted encoder only when it scored at least as well.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys.config import RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.search.encoder import row_text
from recsys.search.pseudo_queries import shopper_queries, title_key, training_queries

SOURCE = "catalog pseudo-queries"
MAX_HELD_OUT_QUERIES = 2000


def catalog_rows(dataset: PreparedDataset) -> list[dict]:
    columns = ["item_index", "item_id", "title", "category", "brand", "attributes"]
    return pq.read_table(dataset.path / "items.parquet", columns=columns).sort_by("item_index").to_pylist()


def held_out_items(cfg: RecsysConfig, rows: list[dict]) -> set[int]:
    """Item indices of the held-out titles: `holdout` of the distinct titles, drawn by the seed."""
    titles = sorted({title_key(r) for r in rows if title_key(r)})
    if not titles:
        raise ValueError("the catalog has no item with a title: there is nothing to make pseudo-queries from; "
                         "set search.adapt.enabled: false")
    rng = np.random.default_rng([cfg.search.train.seed, 7])
    held = set(rng.choice(titles, size=max(1, int(len(titles) * cfg.search.adapt.holdout)), replace=False).tolist())
    return {r["item_index"] for r in rows if title_key(r) in held}


def split_pairs(cfg: RecsysConfig, rows: list[dict]) -> tuple[list[dict], set[int]]:
    """(training pairs with item texts, held-out item indices): no training pair comes from a
    held-out title."""
    held = held_out_items(cfg, rows)
    texts = {r["item_index"]: row_text(r) for r in rows}
    train_rows = [r for r in rows if r["item_index"] not in held and r.get("title")]
    pairs = [{**p, "text": texts[p["item"]]} for p in training_queries(train_rows, cfg.search.adapt.queries_per_item, cfg.search.train.seed)]
    return pairs, held


def held_out_queries(cfg: RecsysConfig, rows: list[dict], held: set[int], seed: int = 9) -> tuple[dict, dict]:
    """Shopper-style queries from the held-out items (query id → text, query id → {item index: 1})."""
    held_rows = [{**r, "key": str(r["item_index"])} for r in rows if r["item_index"] in held]
    queries, qrels = shopper_queries(held_rows, min(MAX_HELD_OUT_QUERIES, len(held_rows)), cfg.search.train.seed + seed, id_field="key")
    return queries, {q: {int(i): g for i, g in rel.items()} for q, rel in qrels.items()}


def dense_ndcg(encoder_path: Path | None, rows: list[dict], held: set[int], queries: dict, qrels: dict, cfg: RecsysConfig) -> float:
    """Dense nDCG@10 of the held-out queries (recsys.eval.metrics: ties in expectation), ranked
    among every catalog item, or the held-out items plus `pool_max` others."""
    from recsys.eval.metrics import mean_graded_metrics
    from recsys.search.encoder import TextEncoder

    others = [r["item_index"] for r in rows if r["item_index"] not in held]
    if len(others) > cfg.search.adapt.pool_max:
        others = np.random.default_rng([cfg.search.train.seed, 8]).choice(others, size=cfg.search.adapt.pool_max, replace=False).tolist()
    pool = sorted(held) + sorted(others)
    position = {item: i for i, item in enumerate(pool)}
    texts = {r["item_index"]: row_text(r) for r in rows}
    encoder = TextEncoder(encoder_path)
    items = encoder.encode([texts[i] for i in pool], max_tokens=cfg.search.max_tokens).numpy()
    vectors = encoder.encode(list(queries.values()), max_tokens=cfg.search.max_tokens).numpy()
    runs = ((items @ v, {position[i]: float(g) for i, g in qrels[q].items()}) for q, v in zip(queries, vectors, strict=True))
    return float(mean_graded_metrics(runs, (10,))["ndcg@10"])


def adapt_encoder(cfg: RecsysConfig, dataset: PreparedDataset, fault: dict | None = None):
    """Fine-tune the bundled MiniLM on the catalog's pseudo-queries and publish it under
    models/<run>/search/<version>, its safeguard in the export's `extra`. A StageResult."""
    from recsys.search.encoder import pretrained_path
    from recsys.search.train import SearchEncoderTask
    from recsys.train.trainer import fit_and_publish

    rows = catalog_rows(dataset)
    train, held = split_pairs(cfg, rows)
    need = cfg.cluster.train_workers * cfg.search.train.batch_size
    if len(train) < need:
        raise ValueError(f"{dataset.path}: {len(train)} pseudo-queries from {len(rows) - len(held)} training items, fewer than "
                         f"one step needs ({cfg.cluster.train_workers} workers × search.train.batch_size "
                         f"{cfg.search.train.batch_size}); raise search.adapt.queries_per_item or lower the batch size")
    queries, qrels = held_out_queries(cfg, rows, held)
    if not queries:
        raise ValueError(f"{dataset.path}: the held-out titles ({len(held)} items) give no query to check the adapted encoder "
                         "on (titles without content words); raise search.adapt.holdout")
    baseline = dense_ndcg(None, rows, held, queries, qrels, cfg)

    def vet(folder: Path) -> dict:
        adapted = dense_ndcg(folder, rows, held, queries, qrels, cfg)
        return {"safeguard": {"held_out_items": len(held), "held_out_queries": len(queries), "metric": "dense ndcg@10",
                              "pretrained": baseline, "adapted": adapted, "ship": adapted >= baseline}}

    task = SearchEncoderTask(cfg, dataset, train, pretrained_path(), source=SOURCE)
    return fit_and_publish(cfg, task, dataset, fault=fault, vet=vet,
                           extra={"pairs": len(train), "source": SOURCE, "queries_per_item": cfg.search.adapt.queries_per_item})
