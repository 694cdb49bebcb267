"""Keyword search in a replica: the versioned text index loaded beside the recommender, and the
batched step of /search (one query-encoder pass per batch, one sequence-model pass for the
personalised queries, one ANN search for the unfiltered ones)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from recsys.artifacts import IndexRelease
from recsys.config import IndexConfig, SearchConfig
from recsys.online.catalog import Catalog
from recsys.online.retrieve import Retriever


@dataclass
class SearchJob:
    """One /search request's work for the batched step."""

    query: str
    history: list[int]
    k: int
    mode: str
    allowed: np.ndarray | None = None
    results: list = field(default_factory=list)  # recsys.search.engine.Hit, best first


def load_search(release: IndexRelease, cfg: SearchConfig, index_cfg: IndexConfig, catalog: Catalog, n_items: int):
    """The version's text index (item text vectors + BM25) and its query encoder."""
    from recsys.search.encoder import TextEncoder, row_text
    from recsys.search.engine import SearchIndex, SearchWeights
    from recsys.search.text_index import load_query_encoder, load_text_index

    meta = release.manifest["search"]
    index, vectors = load_text_index(release.path, meta, index_cfg)
    texts = [row_text(catalog.rows[i]) for i in range(1, n_items + 1)]
    return SearchIndex(texts, vectors, TextEncoder(meta["encoder_path"]), SearchWeights.of(cfg), index, cfg.max_tokens,
                       cfg.query_cache_size, load_query_encoder(release.path, meta))


def run_search(search, retriever: Retriever, jobs: list[SearchJob]) -> dict:
    """Rank every job (one batch); fills job.results. Returns stage timings in ms."""
    t0 = time.perf_counter()
    queries = search.encode_queries([j.query for j in jobs])
    personal = [j for j in jobs if j.mode == "hybrid_personal"]
    users = iter(retriever.user_vectors([j.history for j in personal]) if personal else [])
    t1 = time.perf_counter()
    unfiltered = [i for i, j in enumerate(jobs) if j.allowed is None]  # one ANN search for these together
    dense = dict(zip(unfiltered, search.dense_top(queries[unfiltered]), strict=True)) if unfiltered else {}
    for i, (job, q) in enumerate(zip(jobs, queries, strict=True)):
        u = next(users) if job.mode == "hybrid_personal" else None
        affinity = None if u is None else (lambda items, u=u: retriever.vectors.of(items) @ u)
        job.results = search.rank(job.query, q, job.k, job.mode, affinity, job.allowed, dense.get(i))
    t2 = time.perf_counter()
    return {"query_encode_ms": (t1 - t0) * 1e3, "search_ms": (t2 - t1) * 1e3}
