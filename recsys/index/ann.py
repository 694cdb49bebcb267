"""FAISS item index: exact inner product for small catalogs, HNSW or IVF for large ones.

Items are stored under FAISS id `item_index - 1` (item indices start at 1; 0 is padding), so a
search answers item indices directly. Filters (exclusions, category, price) reach FAISS as a
bitmap selector, so a filtered query still returns its k best allowed items.

Graph and cell indexes search nearest neighbours by L2, and inner product is not a metric (HNSW
on raw inner products lost ~10 points of recall@100 in tests/unit/test_index.py). So HNSW and IVF
hold each item vector with one extra coordinate sqrt(M² − |v|²), M the largest norm, and search
with the query plus a 0: then |q − v|² = |q|² + M² − 2 q·v, and the L2 order is the inner-product
order exactly (Bachrach et al. 2014). Scores are turned back into q·v.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from recsys.config import IndexConfig

INDEX_FILE = "items.faiss"
META_FILE = "ann.json"


def choose_kind(cfg: IndexConfig, num_items: int) -> str:
    if cfg.kind != "auto":
        return cfg.kind
    return "flat" if num_items < cfg.exact_below else "hnsw"


def _ivf_nlist(cfg: IndexConfig, num_items: int) -> int:
    return cfg.ivf_nlist or max(1, min(num_items // 39, int(4 * math.sqrt(num_items))))


def _augment(vectors: np.ndarray, max_norm: float) -> np.ndarray:
    extra = np.sqrt(np.maximum(max_norm**2 - (vectors.astype(np.float64) ** 2).sum(1), 0.0))
    return np.ascontiguousarray(np.hstack([vectors, extra[:, None].astype(np.float32)]))


@dataclass
class ItemIndex:
    index: faiss.Index
    kind: str
    num_items: int
    max_norm: float | None = None  # set for L2-searched indexes (hnsw, ivf): see the module docstring

    @classmethod
    def build(cls, vectors: np.ndarray, cfg: IndexConfig, kind: str | None = None) -> ItemIndex:
        """vectors: (N, H) float32, row i-1 = item index i."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        kind = kind or choose_kind(cfg, n)
        max_norm = None
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind in ("hnsw", "ivf"):
            max_norm = float(np.linalg.norm(vectors, axis=1).max())
            vectors = _augment(vectors, max_norm)
            if kind == "hnsw":
                index = faiss.IndexHNSWFlat(dim + 1, cfg.hnsw_m, faiss.METRIC_L2)
                index.hnsw.efConstruction = cfg.hnsw_ef_construction
                index.hnsw.efSearch = cfg.hnsw_ef_search
            else:
                nlist = _ivf_nlist(cfg, n)
                index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim + 1), dim + 1, nlist, faiss.METRIC_L2)
                index.nprobe = min(cfg.ivf_nprobe, nlist)
        else:
            raise ValueError(f"index.kind must be one of auto, flat, hnsw, ivf; got {kind!r}")
        # OMP_NUM_THREADS=1 (set for Ray workers) would make the build single-threaded: use every core.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        try:
            if kind == "ivf":
                index.train(vectors[np.random.default_rng(cfg.seed).choice(n, size=min(n, 256 * index.nlist), replace=False)])
            index.add(vectors)
        finally:
            faiss.omp_set_num_threads(threads)
        return cls(index, kind, n, max_norm)

    def save(self, folder: Path) -> None:
        faiss.write_index(self.index, str(folder / INDEX_FILE))
        (folder / META_FILE).write_text(json.dumps({"kind": self.kind, "num_items": self.num_items, "max_norm": self.max_norm}))

    @classmethod
    def load(cls, folder: Path, kind: str, cfg: IndexConfig | None = None) -> ItemIndex:
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        if meta["kind"] != kind:
            raise ValueError(f"{folder} holds a {meta['kind']} index, the manifest says {kind}")
        index = faiss.read_index(str(folder / INDEX_FILE))
        if cfg is not None and kind == "hnsw":
            index.hnsw.efSearch = cfg.hnsw_ef_search
        if cfg is not None and kind == "ivf":
            index.nprobe = min(cfg.ivf_nprobe, index.nlist)
        return cls(index, kind, index.ntotal, meta["max_norm"])

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(B, H) queries → (scores, item indices), each (B, k), best first; item index 0 marks
        'no more allowed items'. `allowed`: (N,) bool, position i is item index i + 1; shared by the batch."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        searched = queries if self.max_norm is None else np.ascontiguousarray(np.hstack([queries, np.zeros((len(queries), 1), np.float32)]))
        k = min(k, self.num_items)
        if allowed is not None:
            packed = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
            selector = faiss.IDSelectorBitmap(self.num_items, faiss.swig_ptr(packed))
            scores, ids = self.index.search(searched, k, params=self._with_selector(selector))
        else:
            scores, ids = self.index.search(searched, k)
        if self.max_norm is not None:  # squared L2 → inner product
            scores = ((queries.astype(np.float64) ** 2).sum(1, keepdims=True) + self.max_norm**2 - scores) / 2
            scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids + 1  # FAISS's -1 (nothing left) becomes item index 0

    def _with_selector(self, selector):
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=self.index.hnsw.efSearch)
        if self.kind == "ivf":
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.index.nprobe)
        return faiss.SearchParameters(sel=selector)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k item indices by inner product (the recall reference), (B, k)."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(vectors)))[1] + 1


def recall_against_exact(index: ItemIndex, vectors: np.ndarray, queries: np.ndarray, k: int = 100) -> float:
    """Recall@k of `index` against exact inner-product search over the same `vectors`."""
    k = min(k, len(vectors))
    return recall_at_k(index.search(queries, k)[1], exact_top_k(vectors, queries, k))


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k that the index returned."""
    hits = [len(set(f.tolist()) & set(e.tolist())) / len(e) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits))


def queries_per_second(index: ItemIndex, queries: np.ndarray, k: int) -> float:
    """One query per call, as serving searches: the QPS a replica's thread gets."""
    started = time.perf_counter()
    for q in queries:
        index.search(q[None], k)
    return len(queries) / (time.perf_counter() - started)
