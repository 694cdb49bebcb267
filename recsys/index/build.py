"""Index build job: the trained model's item vectors → a FAISS index, published as a version.

    <root>/indexes/<run_name>/<version>/      items.faiss + manifest.json
    <root>/indexes/<run_name>/LATEST          the version serving loads by default

A version pairs one model version with one index build. Its manifest names both, the CTR ranker
trained from that model (when the ctr stage published one), and the recall@100 of the index
against exact search measured at build time on real users' query vectors. A build whose recall is
below `index.min_recall_at_100` is refused, never published.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from recsys.artifacts import ArtifactStore, IndexRelease, ModelExport
from recsys.config import RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.index.ann import ItemIndex, choose_kind, recall_against_exact

logger = logging.getLogger(__name__)
RECALL_K = 100


class IndexBuildError(RuntimeError):
    """The index would serve worse results than `index.min_recall_at_100` allows."""


def latest_index(cfg: RecsysConfig) -> IndexRelease:
    return ArtifactStore.of(cfg).latest("index")


def ranker_for(cfg: RecsysConfig, model: ModelExport) -> Path | None:
    """The latest CTR export fine-tuned from `model`, if the ctr stage published one."""
    if cfg.serve.ranker == "retrieval":
        return None
    store = ArtifactStore.of(cfg)
    ranker = store.latest("ctr", init_from=model.path, required=False)
    if ranker is None and store.latest("ctr", required=False) is not None:
        logger.warning("the latest CTR model was trained from another retrieval model than %s; ranking by retrieval score", model.path)
    return ranker.path if ranker is not None else None


def query_vectors(model, dataset: PreparedDataset, n: int, seed: int) -> np.ndarray:
    """Real users' query vectors (their full sequences), the queries recall is measured on."""
    import pyarrow.parquet as pq

    seqs = pq.read_table(dataset.split_dir("sequences"), columns=["items"])["items"].to_pylist()
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(seqs), size=min(n, len(seqs)), replace=False)
    histories = [[int(i) for i in seqs[j]][-model.config.max_seq_len :] for j in picked]
    return torch.cat([model.user_vectors(histories[s : s + 512]) for s in range(0, len(histories), 512)]).numpy()


def text_feature_summary(model, dataset: PreparedDataset) -> dict | None:
    """For a text model: its encoder and the items whose text vector is zero (no text: their id and
    attributes carry them alone), read from the weights the index is built from."""
    if not model.items.use_text:
        return None
    empty = np.flatnonzero(~model.items.item_text[1 : model.config.num_items + 1].abs().sum(1).bool().numpy()) + 1
    ids = dataset.items().set_index("item_index")["item_id"]
    return {"encoder": model.config.text_encoder, "max_tokens": model.config.text_max_tokens,
            "items_without_text": int(len(empty)), "without_text": [str(ids[i]) for i in empty[:1000]]}


def build_index(cfg: RecsysConfig, export: ModelExport) -> IndexRelease:
    """The index version of one model export (the index stage: recsys.stages.index picks the export)."""
    from recsys.models import SeqRecModel

    model_path, dataset = export.path, export.dataset()
    model = SeqRecModel.from_pretrained(model_path).eval()
    vectors = model.item_vectors().numpy()
    kind = choose_kind(cfg.index, len(vectors))
    started = time.perf_counter()
    index = ItemIndex.build(vectors, cfg.index, kind)
    build_s = time.perf_counter() - started

    queries = query_vectors(model, dataset, cfg.index.recall_queries, cfg.index.seed)
    k = min(RECALL_K, len(vectors))
    recall = recall_against_exact(index, vectors, queries, k)
    if recall < cfg.index.min_recall_at_100:
        raise IndexBuildError(
            f"{kind} index recall@{k} is {recall:.4f} < index.min_recall_at_100 {cfg.index.min_recall_at_100}; "
            "raise index.hnsw_ef_search / index.ivf_nprobe, or use index.kind: flat"
        )
    text = None
    if cfg.search.enabled:
        from recsys.search.text_index import build_text_index

        text = build_text_index(cfg, dataset)
        if text.meta["recall_at_100"] < cfg.index.min_recall_at_100:
            raise IndexBuildError(
                f"text {text.meta['kind']} index recall@100 is {text.meta['recall_at_100']:.4f} < index.min_recall_at_100 "
                f"{cfg.index.min_recall_at_100}; raise index.hnsw_ef_search / index.ivf_nprobe, or use index.kind: flat"
            )
    params = cfg.index.model_dump(mode="json")
    ranker = ranker_for(cfg, export)
    encoder = text.meta["encoder_path"] if text else None
    # The version names everything served together: model, index build, ranker, search encoder.
    digest = hashlib.sha256(
        json.dumps({"kind": kind, "ranker": str(ranker), "encoder": encoder, "max_tokens": cfg.search.max_tokens,
                    "query_runtime": cfg.search.query_runtime if text else None, **params}, sort_keys=True).encode()
    ).hexdigest()[:8]
    version = f"{model_path.name}.{kind}-{digest}"
    manifest = {
        "version": version,
        "model_version": model_path.name,
        "model_path": str(model_path),
        "ranker_path": str(ranker) if ranker else None,
        "dataset_path": str(dataset.path),
        "kind": kind,
        "params": params,
        "items": len(vectors),
        "dim": int(vectors.shape[1]),
        "recall_at_100": round(recall, 5),
        "recall_queries": len(queries),
        "build_s": round(build_s, 3),
        "created": datetime.now(UTC).isoformat(),
        "search": text.meta if text else None,
        "text_features": text_feature_summary(model, dataset),
    }

    def write(scratch: Path) -> None:
        index.save(scratch)
        if text:
            text.save(scratch)

    release = ArtifactStore.of(cfg).publish_index(version, manifest, write)
    logger.info("published index %s (%s, %d items, recall@%d %.4f)", version, kind, len(vectors), k, recall)
    return release
