"""One servable version — retrieval model + ANN index + optional CTR ranker + catalog + optional
text index — and the compute of every endpoint. No Ray, no HTTP: the Ray Serve deployment, the
bare benchmark server and the parity tests call this API.

    engine = OnlineEngine(release, EngineSpec.of(cfg))
    state = engine.user_state(user_id, item_ids, live_events, timestamp_ms)
    engine.recommend(state, k, filters, explain)       → Recommendation
    engine.rank(state, candidate_ids, explain)         → Recommendation
    engine.search(query, k, mode, state, filters)      → SearchResult
    engine.add_item(item)                              → what the new item is known by

Batched front-ends split recommend and search in three: `prepare_*` (checks the request, may
answer at once: a cold start), `run_*` (one batch's compute), `finish_*` (the answer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from recsys.artifacts import ArtifactStore, IndexRelease
from recsys.config import AdsConfig, IndexConfig, RecsysConfig, SearchConfig, ServeConfig
from recsys.index.ann import ItemIndex, recall_against_exact
from recsys.models.seqrec.modeling_ctr import CONTEXT_SIZES
from recsys.online.catalog import Catalog, Filters, VersionCheckError
from recsys.online.explain import explain
from recsys.online.rank import CTRRanker
from recsys.online.retrieve import Retriever
from recsys.online.search import SearchJob, load_search, run_search
from recsys.search.engine import VARIANTS


class InvalidRequest(ValueError):
    """A request the engine cannot answer; `field` names the input, `status` the HTTP status it maps to."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


class EngineSpec(BaseModel):
    """Everything a replica is built from: its config sections and where its artifacts are."""

    model_config = ConfigDict(extra="forbid")

    index_root: str  # the folder of published index versions (indexes/<run_name>)
    serve: ServeConfig
    index: IndexConfig
    search: SearchConfig
    interaction_events: list[str]  # the events that extend a user's history
    session_gap_ms: int
    items_log: str | None = None  # items added while serving (recsys.online.cold_start.CatalogLog)
    events_folder: str  # the memory event store's log and snapshots
    forecast_root: str | None = None  # the folder of published forecast versions (forecasts/<run_name>), when forecast is on
    ads: AdsConfig | None = None  # when ads are on: the auction, budget and pacing settings
    ads_export: str | None = None  # the calibrated pCTR export /ads serves (its ad world's campaigns); resolved at build time
    ads_ledger_folder: str | None = None  # the ad ledger's day logs

    @classmethod
    def of(cls, cfg: RecsysConfig) -> EngineSpec:
        serving = cfg.artifacts_root / "serving"
        return cls(
            index_root=str(ArtifactStore.of(cfg).folder("index")), serve=cfg.serve, index=cfg.index, search=cfg.search,
            interaction_events=list(cfg.data.interaction_events), session_gap_ms=int(cfg.data.session_gap_minutes * 60_000),
            items_log=str(serving / cfg.run_name / "new_items.jsonl"), events_folder=cfg.serve.events.path or str(serving / "events"),
            forecast_root=str(ArtifactStore.of(cfg).folder("forecast")) if cfg.forecast.enabled else None,
            ads=cfg.ads if cfg.ads.enabled else None, ads_ledger_folder=str(serving / cfg.run_name / "ad_ledger"),
        )

    def release(self, version: str) -> IndexRelease:
        return IndexRelease.load(Path(self.index_root) / version)


@dataclass
class UserState:
    history: list[int]  # item indices, oldest first: logs, then live events, then the request's items
    purchased: set[int]
    context: tuple[int, int, int]  # hour, weekday, session position


@dataclass
class ScoredItem:
    index: int
    score: float
    retrieval_score: float | None = None
    explanation: dict | None = None


@dataclass
class Recommendation:
    items: list[ScoredItem]
    cold_start: bool
    ranker: str  # "ctr", "retrieval" or "popularity"


@dataclass
class RecommendJob:
    """One request's scoring work: what the batched step needs and nothing more."""

    state: UserState
    k: int
    allowed: np.ndarray | None = None  # (N,) bool, position i = item index i + 1
    explain: bool = False
    results: list = field(default_factory=list)  # (item index, score, retrieval score), best first


def context_of(timestamp_ms: int, session_position: int) -> tuple[int, int, int]:
    """[hour, weekday, session_position] as the CTR examples encode them (UTC; Monday = 0)."""
    t = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return t.hour, t.weekday(), min(session_position, CONTEXT_SIZES["session_position"] - 1)


def now_ms() -> int:
    return int(time.time() * 1000)


class OnlineEngine:
    def __init__(self, release: IndexRelease, spec: EngineSpec):
        from recsys.models import SeqRecForCTR, SeqRecModel

        m, serve = release.manifest, spec.serve
        self.spec, self.manifest = spec, m
        self.version, self.model_version = release.version, m["model_version"]
        self.interactions = set(spec.interaction_events)
        model = SeqRecModel.from_pretrained(m["model_path"]).eval()
        self.retriever = Retriever(model, ItemIndex.load(release.path, m["kind"], spec.index))
        if serve.ranker == "ctr" and not m.get("ranker_path"):
            raise VersionCheckError(f"serve.ranker is ctr but index version {self.version} names no CTR model; run the ctr stage, then the index stage")
        self.ranker = None
        if m.get("ranker_path") and serve.ranker != "retrieval":
            self.ranker = CTRRanker(SeqRecForCTR.from_pretrained(m["ranker_path"]).eval(), self.retriever)
        self.catalog = Catalog.load(Path(m["dataset_path"]))
        n = model.config.num_items
        if len(self.catalog) != n or self.retriever.index.num_items != n:
            raise VersionCheckError(f"catalog has {len(self.catalog)} items, model {n}, index {self.retriever.index.num_items}: they must agree")
        self.search_index = None
        if spec.search.enabled and m.get("search"):
            self.search_index = load_search(release, spec.search, spec.index, self.catalog, n)
        self.items_offset = 0  # bytes of the new-items log already ingested
        self.text_encoder = None  # a text model embeds new items with the encoder it was trained with
        if model.config.text_embedding_dim:
            from recsys.search.encoder import TextEncoder, pretrained_path

            self.text_encoder = TextEncoder(pretrained_path())

    @property
    def ranker_name(self) -> str:
        return "ctr" if self.ranker is not None else "retrieval"

    def item(self, index: int) -> dict:
        return self.catalog.item(index)

    # ---- users ---------------------------------------------------------------------------
    def indices(self, ids: list[str], field_name: str) -> list[int]:
        known, unknown = self.catalog.indices(ids)
        if unknown:
            raise InvalidRequest(field_name, "unknown item ids: " + ", ".join(f"{field_name}{u}" for u in unknown[:5]))
        return known

    def user_state(self, user_id: str | None, item_ids: list[str] | None, live: list, timestamp_ms: int | None) -> UserState:
        """Logged history, then live events (item index, event, ms) from the event store, then the request's items."""
        recent = item_ids or []
        if len(recent) > self.spec.serve.max_history:
            raise InvalidRequest("item_ids", f"at most {self.spec.serve.max_history} items (serve.max_history), got {len(recent)}")
        extra = self.indices(recent, "item_ids")
        history = list(self.catalog.histories.get(user_id, [])) if user_id else []
        purchased = set(self.catalog.purchased.get(user_id, ())) if user_id else set()
        now = timestamp_ms if timestamp_ms is not None else now_ms()
        in_session = 0
        for item_index, event, ts in live:
            if event in self.interactions:
                history.append(item_index)
            if event == "purchase":
                purchased.add(item_index)
            in_session += now - ts <= self.spec.session_gap_ms
        return UserState(history + extra, purchased, context_of(now, in_session))

    def _k(self, k: int | None) -> int:
        k = k or self.spec.serve.default_k
        if k > self.spec.serve.max_k:
            raise InvalidRequest("k", f"k must be ≤ {self.spec.serve.max_k} (serve.max_k), got {k}")
        return k

    # ---- /recommend ----------------------------------------------------------------------
    def prepare_recommend(self, state: UserState, k: int | None, filters: Filters | None, explain: bool = False):
        """A RecommendJob for the batched step, or the answer itself (a cold start: popularity)."""
        k = self._k(k)
        exclude = (set(state.history) if self.spec.serve.exclude_history else set()) | (
            state.purchased if filters is not None and filters.exclude_purchased else set())
        allowed = self.catalog.allowed(filters, exclude)
        if not state.history:
            return Recommendation([ScoredItem(i, s) for i, s in self.catalog.popular_items(k, allowed)], True, "popularity")
        return RecommendJob(state, k, allowed, explain)

    def run_recommend(self, jobs: list[RecommendJob]) -> dict:
        """Retrieve then rank every job (one batch); fills job.results. Returns stage timings in ms."""
        t0 = time.perf_counter()
        users = self.retriever.user_vectors([j.state.history for j in jobs])
        t1 = time.perf_counter()
        candidates, retrieval = [], []
        for job, u in zip(jobs, users, strict=True):
            n = max(job.k, self.spec.serve.candidates) if self.ranker is not None else job.k
            scores, ids = self.retriever.retrieve(u, n, job.allowed)
            candidates.append(ids.tolist())
            retrieval.append(scores)
        t2 = time.perf_counter()
        ranked = [j for j, c in zip(jobs, candidates, strict=True) if c]
        if self.ranker is not None and ranked:
            probs = iter(self.ranker.probabilities([j.state.history for j in ranked], [c for c in candidates if c],
                                                   [j.state.context for j in ranked]))
        for job, cands, rscores in zip(jobs, candidates, retrieval, strict=True):
            final = next(probs) if self.ranker is not None and cands else rscores
            order = np.argsort(-final, kind="stable")[: job.k]
            job.results = [(cands[i], float(final[i]), float(rscores[i])) for i in order]
        t3 = time.perf_counter()
        return {"encode_ms": (t1 - t0) * 1e3, "ann_ms": (t2 - t1) * 1e3, "rank_ms": (t3 - t2) * 1e3}

    def finish_recommend(self, job: RecommendJob) -> Recommendation:
        return Recommendation(self._scored(job.results, job.state, job.explain), False, self.ranker_name)

    def recommend(self, state: UserState, k: int | None = None, filters: Filters | None = None, explain: bool = False) -> Recommendation:
        job = self.prepare_recommend(state, k, filters, explain)
        if isinstance(job, Recommendation):
            return job
        self.run_recommend([job])
        return self.finish_recommend(job)

    def _scored(self, results, state: UserState, with_explanation: bool) -> list[ScoredItem]:
        return [ScoredItem(i, s, r, self.explain(state.history, i, state.context) if with_explanation else None)
                for i, s, r in results]

    # ---- /rank ---------------------------------------------------------------------------
    def rank(self, state: UserState, candidate_ids: list[str], explain: bool = False) -> Recommendation:
        """Score the caller's candidates (no retrieval), best first."""
        if len(candidate_ids) > self.spec.serve.candidates:
            raise InvalidRequest("candidates", f"at most {self.spec.serve.candidates} candidates (serve.candidates), got {len(candidate_ids)}")
        candidates = self.indices(candidate_ids, "candidates")
        if not state.history:
            ranked = sorted(candidates, key=lambda i: -self.catalog.train_count(i))
            return Recommendation([ScoredItem(i, float(self.catalog.train_count(i))) for i in ranked], True, "popularity")
        u = self.retriever.user_vectors([state.history])[0]
        retrieval = self.retriever.vectors.of(candidates) @ u
        final = self.ranker.probabilities([state.history], [candidates], [state.context])[0] if self.ranker is not None else retrieval
        order = np.argsort(-final, kind="stable")
        return Recommendation(self._scored([(candidates[i], float(final[i]), float(retrieval[i])) for i in order], state, explain),
                              False, self.ranker_name)

    def explain(self, history: list[int], item: int, context: tuple) -> dict:
        return explain(self.retriever, self.ranker, self.catalog, history, item, context)

    # ---- /search -------------------------------------------------------------------------
    def prepare_search(self, query: str, k: int | None, mode: str | None, state: UserState | None,
                       filters: Filters | None) -> SearchJob:
        """Checks the query and picks the mode: hybrid_personal when a user is known, else hybrid."""
        from recsys.search.engine import check_query

        if self.search_index is None:
            raise InvalidRequest("service", f"version {self.version} has no text index; build it with search.enabled: true", status=503)
        try:
            query = check_query(query, self.spec.search.max_query_chars, self.spec.search.max_query_terms)
        except ValueError as exc:
            raise InvalidRequest("query", str(exc)) from None
        k = self._k(k)
        mode = mode or ("hybrid_personal" if state is not None else "hybrid")
        if mode not in VARIANTS:
            raise InvalidRequest("mode", f"unknown mode {mode!r}; use one of {', '.join(VARIANTS)}")
        history: list[int] = []
        if mode == "hybrid_personal":
            if state is None:
                raise InvalidRequest("mode", "hybrid_personal needs user_id or item_ids to personalise with")
            history = state.history
            if not history:  # nothing known about this user: relevance alone
                mode = "hybrid"
        allowed = self.catalog.allowed(filters, set())  # exclude_purchased is a /recommend filter
        return SearchJob(query, history, k, mode, allowed)

    def run_search(self, jobs: list[SearchJob]) -> dict:
        return run_search(self.search_index, self.retriever, jobs)

    def lexical_terms(self, query: str, item: int) -> list[str]:
        """The query words found in the item's text (a search hit's signal)."""
        return self.search_index.lexical.matched_terms(query, self.search_index.texts[item - 1])

    def search(self, query: str, k: int | None = None, mode: str | None = None, state: UserState | None = None,
               filters: Filters | None = None) -> SearchJob:
        job = self.prepare_search(query, k, mode, state, filters)
        self.run_search([job])
        return job

    # ---- cold start: items added while serving ---------------------------------------------
    def add_item(self, item: dict) -> dict:
        """Make a new item searchable and recommendable now; returns what it is known by."""
        from recsys.data.catalog import attribute_names

        if item["item_id"] in self.catalog.index_of:
            raise InvalidRequest("item_id", f"item {item['item_id']!r} is already in the catalog; item ids are never reused", status=409)
        names = attribute_names(item.get("category"), item.get("brand"), item.get("attributes"))
        known = self.catalog.known_attributes(names)[: self.retriever.model.config.max_attributes_per_item]
        index = self.catalog.add(item, known)
        text = self.text_vector(item)
        self.catalog.rows[index]["text_vector"] = text  # what its explanation's text share is computed from
        recommendable = self.retriever.add_item(known, text)
        if self.ranker is not None:
            self.ranker.add_item(known, text)
        if self.search_index is not None:
            self.search_index.add_item(item)
        return {"searchable": self.search_index is not None, "recommendable": recommendable,
                "known_attributes": [a for a in names if a in self.catalog.attribute_index],
                "unknown_attributes": [a for a in names if a not in self.catalog.attribute_index]}

    def text_vector(self, item: dict) -> np.ndarray | None:
        """A new item's text vector, as the training stage embedded the catalog (None: no text or no text model)."""
        from recsys.search.encoder import row_text

        text = row_text(item)
        if self.text_encoder is None or not text.strip():
            return None
        return self.text_encoder.encode([text], max_tokens=self.retriever.model.config.text_max_tokens).numpy()[0]

    def sync_items(self, log) -> None:
        """Ingest the items another replica (or this one before a restart) added (a CatalogLog)."""
        new, self.items_offset = log.read_from(self.items_offset)
        for item in new:
            if item["item_id"] not in self.catalog.index_of:
                self.add_item(item)

    # ---- checks before a version may serve ---------------------------------------------------
    def check(self, min_recall: float, queries: int = 64) -> dict:
        """Recall@100 of the loaded index against exact search on real users, plus one smoke
        query end to end; raises VersionCheckError instead of letting a bad version serve."""
        histories = self.catalog.histories
        users = [u for u in list(histories)[:queries] if histories[u]]
        if not users:
            raise VersionCheckError(f"version {self.version}: no user histories to check with")
        q = self.retriever.user_vectors([list(histories[u]) for u in users])
        index = self.retriever.index
        k = min(100, index.num_items)
        recall = recall_against_exact(index, self.retriever.item_matrix, q, k)
        if recall < min_recall:
            raise VersionCheckError(f"version {self.version}: recall@{k} {recall:.4f} < index.min_recall_at_100 {min_recall}")
        job = RecommendJob(UserState(list(histories[users[0]]), set(), context_of(0, 0)), min(10, index.num_items))
        self.run_recommend([job])
        if not job.results or not all(np.isfinite(s) for _, s, _ in job.results):
            raise VersionCheckError(f"version {self.version}: the smoke query returned {job.results!r}")
        return {"recall_at_100": recall, "smoke_items": len(job.results)}
