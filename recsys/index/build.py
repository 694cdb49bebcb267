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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from recsys.artifacts import atomic_folder, latest_version, point_latest
from recsys.config import RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.index.ann import ItemIndex, choose_kind, recall_against_exact

logger = logging.getLogger(__name__)
MANIFEST = "manifest.json"
RECALL_K = 100


class IndexBuildError(RuntimeError):
    """The index would serve worse results than `index.min_recall_at_100` allows."""


@dataclass(frozen=True)
class IndexRelease:
    path: Path
    manifest: dict

    @classmethod
    def load(cls, path: str | Path) -> IndexRelease:
        path = Path(path)
        file = path / MANIFEST
        if not file.is_file():
            raise FileNotFoundError(f"{path} is not a published index version (no {MANIFEST}); run `recsys index --config …` first")
        return cls(path, json.loads(file.read_text()))

    @property
    def version(self) -> str:
        return self.manifest["version"]


def index_parent(cfg: RecsysConfig) -> Path:
    return cfg.artifacts_root / "indexes" / cfg.run_name


def latest_index(cfg: RecsysConfig) -> IndexRelease:
    return IndexRelease.load(latest_version(index_parent(cfg), "item index", "index"))


def ranker_for(cfg: RecsysConfig, model_path: Path) -> Path | None:
    """The latest CTR export fine-tuned from `model_path`, if the ctr stage published one."""
    from recsys.artifacts import model_dir

    parent = model_dir(cfg.artifacts_root, cfg.run_name, "ctr")
    pointer = parent / "LATEST"
    if cfg.serve.ranker == "retrieval" or not pointer.is_file():
        return None
    path = parent / pointer.read_text().strip()
    meta = json.loads((path / "recsys.json").read_text())
    if Path(meta.get("init_from") or "").resolve() != Path(model_path).resolve():
        logger.warning("the latest CTR model %s was trained from another retrieval model; ranking by retrieval score", path)
        return None
    return path


def query_vectors(model, dataset: PreparedDataset, n: int, seed: int) -> np.ndarray:
    """Real users' query vectors (their full sequences), the queries recall is measured on."""
    import pyarrow.parquet as pq

    seqs = pq.read_table(dataset.split_dir("sequences"), columns=["items"])["items"].to_pylist()
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(seqs), size=min(n, len(seqs)), replace=False)
    histories = [[int(i) for i in seqs[j]][-model.config.max_seq_len :] for j in picked]
    return torch.cat([model.user_vectors(histories[s : s + 512]) for s in range(0, len(histories), 512)]).numpy()


def build_index(cfg: RecsysConfig, model_path: Path | None = None) -> IndexRelease:
    from recsys.models import SeqRecModel
    from recsys.stages import latest_finetuned

    model_path = Path(model_path or latest_finetuned(cfg)).resolve()
    model_meta = json.loads((model_path / "recsys.json").read_text())
    model = SeqRecModel.from_pretrained(model_path).eval()
    vectors = model.item_vectors().numpy()
    kind = choose_kind(cfg.index, len(vectors))
    started = time.perf_counter()
    index = ItemIndex.build(vectors, cfg.index, kind)
    build_s = time.perf_counter() - started

    queries = query_vectors(model, PreparedDataset(model_meta["dataset_path"]), cfg.index.recall_queries, cfg.index.seed)
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

        text = build_text_index(cfg, PreparedDataset(model_meta["dataset_path"]))
        if text.meta["recall_at_100"] < cfg.index.min_recall_at_100:
            raise IndexBuildError(
                f"text {text.meta['kind']} index recall@100 is {text.meta['recall_at_100']:.4f} < index.min_recall_at_100 "
                f"{cfg.index.min_recall_at_100}; raise index.hnsw_ef_search / index.ivf_nprobe, or use index.kind: flat"
            )
    params = cfg.index.model_dump(mode="json")
    ranker = ranker_for(cfg, model_path)
    encoder = text.meta["encoder_path"] if text else None
    # The version names everything served together: model, index build, ranker, search encoder.
    digest = hashlib.sha256(
        json.dumps({"kind": kind, "ranker": str(ranker), "encoder": encoder, "max_tokens": cfg.search.max_tokens, **params}, sort_keys=True).encode()
    ).hexdigest()[:8]
    version = f"{model_path.name}.{kind}-{digest}"
    manifest = {
        "version": version,
        "model_version": model_path.name,
        "model_path": str(model_path),
        "ranker_path": str(ranker) if ranker else None,
        "dataset_path": model_meta["dataset_path"],
        "kind": kind,
        "params": params,
        "items": len(vectors),
        "dim": int(vectors.shape[1]),
        "recall_at_100": round(recall, 5),
        "recall_queries": len(queries),
        "build_s": round(build_s, 3),
        "created": datetime.now(UTC).isoformat(),
        "search": text.meta if text else None,
    }
    final = index_parent(cfg) / version
    if not (final / MANIFEST).is_file():
        with atomic_folder(final) as scratch:
            index.save(scratch)
            if text:
                text.save(scratch)
            (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2))
    point_latest(index_parent(cfg), version)
    logger.info("published index %s (%s, %d items, recall@%d %.4f)", version, kind, len(vectors), k, recall)
    return IndexRelease.load(final)

