"""One servable version — retrieval model + ANN index + optional CTR ranker + catalog — and the
compute of every endpoint, with no Ray in it: the Serve deployment and the bare baseline
(benchmarks/serving.py) run exactly this code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from recsys.config import IndexConfig, SearchConfig, ServeConfig
from recsys.index import IndexRelease, ItemIndex
from recsys.index.ann import recall_against_exact
from recsys.models.seqrec.modeling_ctr import CONTEXT_SIZES
from recsys.search.engine import fit_mask

CATALOG_FIELDS = ["item_id", "title", "category", "brand", "price"]


class VersionCheckError(RuntimeError):
    """A version failed its load-time checks (recall, smoke query); it is never switched to."""


@dataclass
class Filters:
    categories: list[str] | None = None
    price_min: float | None = None
    price_max: float | None = None
    exclude_purchased: bool = False
    brands: list[str] | None = None

    @property
    def empty(self) -> bool:
        return self.categories is None and self.brands is None and self.price_min is None and self.price_max is None


@dataclass
class SearchJob:
    """One /search request's work for the batched step."""

    query: str
    history: list[int]
    k: int
    variant: str
    allowed: np.ndarray | None = None
    results: list = field(default_factory=list)  # recsys.search.engine.Hit, best first


@dataclass
class Job:
    """One request's scoring work: what the batched step needs and nothing more."""

    history: list[int]
    k: int
    context: tuple[int, int, int]
    allowed: np.ndarray | None = None  # (N,) bool, position i = item index i + 1
    explain: bool = False
    results: list = field(default_factory=list)


def context_of(timestamp_ms: int, session_position: int) -> tuple[int, int, int]:
    """[hour, weekday, session_position] as the CTR examples encode them (UTC; Monday = 0)."""
    t = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return t.hour, t.weekday(), min(session_position, CONTEXT_SIZES["session_position"] - 1)


def load_catalog(target, items) -> None:
    """Catalog lookups from items.parquet's table (item_index 1..N): fields as responses show them
    (missing values None, never NaN), filter arrays, and items by training popularity."""
    rows = items.sort_by("item_index").select(["item_index", *CATALOG_FIELDS, "attributes", "train_count"]).to_pylist()
    if [r["item_index"] for r in rows] != list(range(1, len(rows) + 1)):
        raise VersionCheckError("items.parquet item_index must run 1..N without gaps")
    target.catalog = {r["item_index"]: r for r in rows}
    target.index_of = {r["item_id"]: r["item_index"] for r in rows}
    target.categories = np.asarray([r["category"] or "" for r in rows], dtype=object)
    target.brands = np.asarray([r["brand"] or "" for r in rows], dtype=object)
    target.prices = np.asarray([np.nan if r["price"] is None else r["price"] for r in rows], dtype=np.float64)
    counts = np.asarray([r["train_count"] for r in rows], dtype=np.int64)
    target.popular = (np.argsort(-counts, kind="stable") + 1).tolist()  # item indices, most trained-on first


class ServingModel:
    def __init__(self, release: IndexRelease, serve: ServeConfig, index_cfg: IndexConfig, search: SearchConfig | None = None):
        from recsys.models import SeqRecForCTR, SeqRecModel

        m = release.manifest
        self.version, self.model_version, self.serve = release.version, m["model_version"], serve
        self.model = SeqRecModel.from_pretrained(m["model_path"]).eval()
        self.n_model = self.model.config.num_items  # items the models know; later ones came through POST /items
        self.fresh_vectors = np.zeros((0, self.model.config.hidden_size), np.float32)
        self.fresh_rank_vectors = self.fresh_vectors
        self.fresh_recommendable = np.zeros(0, dtype=bool)  # a new item with no known attribute has no vector to retrieve by
        self.items_offset = 0  # bytes of the new-items log (serving.cold_start) already ingested
        self.ranker = None
        if serve.ranker == "ctr" and not m.get("ranker_path"):
            raise VersionCheckError(f"serve.ranker is ctr but index version {self.version} names no CTR model; run the ctr stage, then the index stage")
        if m.get("ranker_path") and serve.ranker != "retrieval":
            self.ranker = SeqRecForCTR.from_pretrained(m["ranker_path"]).eval()
        with torch.no_grad():
            self.item_matrix = self.model.item_vectors().numpy()
            self.rank_matrix = self.ranker.seqrec.item_vectors().numpy() if self.ranker is not None else None
        self.index = ItemIndex.load(release.path, m["kind"], index_cfg)
        self.manifest = m
        self._load_catalog(Path(m["dataset_path"]))
        self.search = None
        if search is not None and search.enabled and m.get("search"):
            self.search = self._load_search(release, search, index_cfg)

    # ---- catalog and users -------------------------------------------------------------
    def _load_catalog(self, dataset: Path) -> None:
        items = pq.read_table(dataset / "items.parquet")
        n = self.model.config.num_items
        if items.num_rows != n or self.index.num_items != n:
            raise VersionCheckError(f"catalog has {items.num_rows} items, model {n}, index {self.index.num_items}: they must agree")
        load_catalog(self, items)
        vocab = pq.read_table(dataset / "attributes.parquet").to_pydict()
        self.attribute_index = dict(zip(vocab["attribute"], vocab["attribute_index"], strict=True))  # name → index the models know
        self.attribute_name = {i: a for a, i in self.attribute_index.items()}
        seqs = pq.read_table(dataset / "sequences", columns=["user_id", "items"]).to_pydict()
        self.histories = dict(zip(seqs["user_id"], seqs["items"], strict=True))
        self.purchased: dict[str, set[int]] = {}
        if (dataset / "events").exists():
            ev = pq.read_table(dataset / "events", columns=["user_id", "item_id", "event_type"])
            ev = ev.filter(pc.equal(ev["event_type"], "purchase"))
            for user, item in zip(ev["user_id"].to_pylist(), ev["item_id"].to_pylist(), strict=True):
                if item in self.index_of:
                    self.purchased.setdefault(user, set()).add(self.index_of[item])

    def _load_search(self, release: IndexRelease, cfg: SearchConfig, index_cfg: IndexConfig):
        from recsys.search.encoder import TextEncoder, row_text
        from recsys.search.engine import SearchIndex, SearchWeights
        from recsys.search.text_index import load_text_index

        meta = release.manifest["search"]
        index, vectors = load_text_index(release.path, meta, index_cfg)
        texts = [row_text(self.catalog[i]) for i in range(1, self.n_model + 1)]
        return SearchIndex(texts, vectors, TextEncoder(meta["encoder_path"]), SearchWeights.of(cfg), index, cfg.max_tokens, cfg.query_cache_size)

    def item(self, index: int) -> dict:
        return {k: self.catalog[index][k] for k in CATALOG_FIELDS}

    # ---- cold start: items added while serving (serving.cold_start) ---------------------
    def add_item(self, item: dict) -> dict:
        """Make a new item searchable and recommendable now; returns what it is known by."""
        from recsys.data.catalog import attribute_names
        from serving.cold_start import cold_vector

        if item["item_id"] in self.index_of:
            raise ValueError(f"item_id {item['item_id']!r} is already in the catalog")
        index = len(self.catalog) + 1
        names = attribute_names(item.get("category"), item.get("brand"), item.get("attributes"))
        known = [self.attribute_index[a] for a in names if a in self.attribute_index][: self.model.config.max_attributes_per_item]
        self.catalog[index] = {"item_index": index, **{k: item.get(k) for k in CATALOG_FIELDS}, "attributes": list(item.get("attributes") or []),
                               "attribute_indices": known, "train_count": 0}
        self.index_of[item["item_id"]] = index
        self.categories = np.append(self.categories, item.get("category") or "")
        self.brands = np.append(self.brands, item.get("brand") or "")
        self.prices = np.append(self.prices, np.nan if item.get("price") is None else item["price"])
        self.popular.append(index)
        self.fresh_vectors = np.vstack([self.fresh_vectors, cold_vector(self.model.items, known)])
        self.fresh_recommendable = np.append(self.fresh_recommendable, bool(known) and self.model.items.use_attributes)
        if self.ranker is not None:
            self.fresh_rank_vectors = np.vstack([self.fresh_rank_vectors, cold_vector(self.ranker.seqrec.items, known)])
        if self.search is not None:
            self.search.add_item(item)
        return {"searchable": self.search is not None, "recommendable": bool(self.fresh_recommendable[-1]),
                "known_attributes": [a for a in names if a in self.attribute_index], "unknown_attributes": [a for a in names if a not in self.attribute_index]}

    def item_vectors_of(self, indices, ranker: bool = False) -> np.ndarray:
        """(len, H) retrieval (or ranker) item vectors of any served items, new ones included."""
        table, fresh = (self.rank_matrix, self.fresh_rank_vectors) if ranker else (self.item_matrix, self.fresh_vectors)
        idx = np.asarray(indices, dtype=np.int64)
        out = table[np.minimum(idx, self.n_model) - 1]
        new = idx > self.n_model
        if new.any():
            out[new] = fresh[idx[new] - self.n_model - 1]
        return out

    def _encodable(self, histories: list[list[int]]) -> list[list[int]]:
        """Histories as the sequence model can read them: items it was not trained with are left out."""
        pad = self.model.config.pad_index
        return [[i for i in h if i <= self.n_model] or [pad] for h in histories]

    def allowed(self, filters: Filters | None, exclude: set[int]) -> np.ndarray | None:
        """(N,) bool of items a request may return, or None when nothing is filtered."""
        if not exclude and (filters is None or filters.empty):
            return None
        mask = np.ones(len(self.catalog), dtype=bool)
        if filters is not None:
            if filters.categories is not None:
                mask &= np.isin(self.categories, filters.categories)
            if filters.brands is not None:
                mask &= np.isin(self.brands, filters.brands)
            if filters.price_min is not None:
                mask &= self.prices >= filters.price_min  # NaN prices never pass a price filter
            if filters.price_max is not None:
                mask &= self.prices <= filters.price_max
        if exclude:
            mask[np.fromiter(exclude, dtype=np.int64, count=len(exclude)) - 1] = False
        return mask

    def popular_items(self, k: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        picked = [i for i in self.popular if allowed is None or allowed[i - 1]][:k]
        return [(i, float(self.catalog[i]["train_count"])) for i in picked]

    # ---- scoring -----------------------------------------------------------------------
    def user_vectors(self, histories: list[list[int]]) -> np.ndarray:
        return self.model.user_vectors(self._encodable(histories)).numpy()  # left_pad keeps the newest max_seq_len items

    def rank_logits(self, histories: list[list[int]], candidates: list[list[int]], contexts: list[tuple]) -> list[np.ndarray]:
        """CTR log-odds of each history's candidates (one encoder pass per history)."""
        width = max(len(c) for c in candidates)
        padded = np.asarray([c + [c[0]] * (width - len(c)) for c in candidates], dtype=np.int64)
        v = torch.from_numpy(self.item_vectors_of(padded.reshape(-1), ranker=True).reshape(*padded.shape, -1))
        logits = self.ranker.rank_vectors(self._encodable(histories), v, torch.tensor(contexts, dtype=torch.long)).numpy()
        return [row[: len(c)] for row, c in zip(logits, candidates, strict=True)]

    def retrieve(self, u: np.ndarray, n: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item indices) of the n best allowed items for one user vector: the ANN index
        over the trained items, and exact scores over items added since."""
        allowed = fit_mask(allowed, self.n_model + len(self.fresh_vectors))
        scores, ids = self.index.search(u[None], n, None if allowed is None else allowed[: self.n_model])
        keep = ids[0] > 0
        scores, ids = scores[0][keep], ids[0][keep]
        if len(self.fresh_vectors):
            ok = self.fresh_recommendable if allowed is None else self.fresh_recommendable & allowed[self.n_model :]
            extra = np.where(ok, self.fresh_vectors @ u, -np.inf)
            ok = np.isfinite(extra)
            scores = np.concatenate([scores, extra[ok].astype(np.float32)])
            ids = np.concatenate([ids, np.flatnonzero(ok) + self.n_model + 1])
            order = np.argsort(-scores, kind="stable")[:n]
            scores, ids = scores[order], ids[order]
        return scores, ids

    def score_jobs(self, jobs: list[Job]) -> dict:
        """Retrieve then rank every job (one batch); fills job.results with
        (item index, score, retrieval score) best first. Returns stage timings in ms."""
        t0 = time.perf_counter()
        users = self.user_vectors([j.history for j in jobs])
        t1 = time.perf_counter()
        candidates, retrieval = [], []
        for job, u in zip(jobs, users, strict=True):
            n = max(job.k, self.serve.candidates) if self.ranker is not None else job.k
            scores, ids = self.retrieve(u, n, job.allowed)
            candidates.append(ids.tolist())
            retrieval.append(scores)
        t2 = time.perf_counter()
        ranked = [j for j, c in zip(jobs, candidates, strict=True) if c]
        if self.ranker is not None and ranked:
            probs = iter(
                1 / (1 + np.exp(-lg))
                for lg in self.rank_logits([j.history for j in ranked], [c for c in candidates if c], [j.context for j in ranked])
            )
        for job, cands, rscores in zip(jobs, candidates, retrieval, strict=True):
            final = next(probs) if self.ranker is not None and cands else rscores
            order = np.argsort(-final, kind="stable")[: job.k]
            job.results = [(cands[i], float(final[i]), float(rscores[i])) for i in order]
        t3 = time.perf_counter()
        return {"encode_ms": (t1 - t0) * 1e3, "ann_ms": (t2 - t1) * 1e3, "rank_ms": (t3 - t2) * 1e3}

    def search_jobs(self, jobs: list[SearchJob]) -> dict:
        """Rank every /search job (one batch): one encoder pass for the queries not cached, one
        sequence-model pass for the personalised ones. Returns stage timings in ms."""
        t0 = time.perf_counter()
        queries = self.search.encode_queries([j.query for j in jobs])
        personal = [j for j in jobs if j.variant == "hybrid_personal"]
        users = iter(self.user_vectors([j.history for j in personal]) if personal else [])
        t1 = time.perf_counter()
        unfiltered = [i for i, j in enumerate(jobs) if j.allowed is None]  # one ANN search for these together
        dense = dict(zip(unfiltered, self.search.dense_top(queries[unfiltered]), strict=True)) if unfiltered else {}
        for i, (job, q) in enumerate(zip(jobs, queries, strict=True)):
            u = next(users) if job.variant == "hybrid_personal" else None
            affinity = None if u is None else (lambda items, u=u: self.item_vectors_of(items) @ u)
            job.results = self.search.rank(job.query, q, job.k, job.variant, affinity, job.allowed, dense.get(i))
        t2 = time.perf_counter()
        return {"query_encode_ms": (t1 - t0) * 1e3, "search_ms": (t2 - t1) * 1e3}

    def rank_given(self, history: list[int], candidates: list[int], context: tuple) -> list[tuple[int, float, float]]:
        """POST /rank: score the caller's candidates (no retrieval), best first."""
        u = self.user_vectors([history])[0]
        retrieval = self.item_vectors_of(candidates) @ u
        final = 1 / (1 + np.exp(-self.rank_logits([history], [candidates], [context])[0])) if self.ranker is not None else retrieval
        order = np.argsort(-final, kind="stable")
        return [(candidates[i], float(final[i]), float(retrieval[i])) for i in order]

    # ---- explanations ------------------------------------------------------------------
    @torch.no_grad()
    def explain(self, history: list[int], item: int, context: tuple, top: int = 3) -> dict:
        """What drove `item`'s score, from the model itself:
        - history: each history item's occlusion effect (score with it minus score without it),
          on the score the response ranks by;
        - attributes: the exact additive share of each of the item's attributes (and its id) in
          the retrieval score u·v, since v = id vector + mean of its attribute vectors."""
        history = history[-self.model.config.max_seq_len :]
        variants = [history] + [history[:j] + history[j + 1 :] for j in range(len(history))]
        variants = [v or [self.model.config.pad_index] for v in variants]
        if self.ranker is not None:
            scores = self.rank_logits(variants, [[item]] * len(variants), [context] * len(variants))
            scores = np.asarray([s[0] for s in scores])
        else:
            scores = self.user_vectors(variants) @ self.item_vectors_of([item])[0]
        effects = scores[0] - scores[1:]
        order = np.argsort(-effects, kind="stable")[:top]
        u = torch.as_tensor(self.user_vectors([history])[0])
        emb = self.model.items
        fresh = item > self.n_model
        parts = [{"attribute": "item id", "contribution": 0.0 if fresh else float(u @ emb.id_embedding.weight[item])}]
        if emb.use_attributes:
            attrs = torch.as_tensor(self.catalog[item]["attribute_indices"]) if fresh else emb.item_attributes[item]
            present = attrs[attrs > 0]
            for a in present.tolist():
                share = float(u @ emb.attribute_embedding.weight[a]) / len(present)
                parts.append({"attribute": self.attribute_name.get(a, f"attribute {a}"), "contribution": share})
        if emb.use_text and not fresh:
            parts.append({"attribute": "text", "contribution": float(u @ emb.text_projection(emb.item_text[item]))})
        return {
            "score_explained": "ctr_logit" if self.ranker is not None else "retrieval",
            "history": [{"item_id": self.catalog[history[j]]["item_id"], "effect": float(effects[j])} for j in order if history[j] in self.catalog],
            "attributes": sorted(parts, key=lambda p: -abs(p["contribution"])),
        }

    # ---- checks before a version may serve ---------------------------------------------
    def check(self, min_recall: float, queries: int = 64) -> dict:
        """Recall@100 of the loaded index against exact search on real users, plus one smoke
        query end to end; raises VersionCheckError instead of letting a bad version serve."""
        users = [u for u in list(self.histories)[:queries] if self.histories[u]]
        if not users:
            raise VersionCheckError(f"version {self.version}: no user histories to check with")
        q = self.user_vectors([list(self.histories[u]) for u in users])
        k = min(100, self.index.num_items)
        recall = recall_against_exact(self.index, self.item_matrix, q, k)
        if recall < min_recall:
            raise VersionCheckError(f"version {self.version}: recall@{k} {recall:.4f} < index.min_recall_at_100 {min_recall}")
        job = Job(history=list(self.histories[users[0]]), k=min(10, self.index.num_items), context=context_of(0, 0))
        self.score_jobs([job])
        if not job.results or not all(np.isfinite(s) for _, s, _ in job.results):
            raise VersionCheckError(f"version {self.version}: the smoke query returned {job.results!r}")
        return {"recall_at_100": recall, "smoke_items": len(job.results)}

