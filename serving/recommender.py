"""The Serve deployments: the ingress (HTTP, retrieval, ranking in one replica) and the event store.

Composition, measured (docs/serving.md): on a small CPU node every Serve hop costs milliseconds
of serialisation and scheduling, more than retrieval and ranking of one request take, so the
ingress replica holds the model, the ANN index and the ranker, and batches the scoring of
concurrent requests with `@serve.batch` (one encoder pass, one ranker pass per batch). The only
hop is to the event store, which must be one owner of state however many ingress replicas run;
with the Redis backend there is no hop at all.

Model swap: `user_config: {index_version}` names the version to serve. `reconfigure` loads a new
version beside the current one, checks its recall and a smoke query, then switches one reference;
requests that started on the old version finish on it. A version that fails its checks is never
switched to (the replica keeps serving the old one and reports the failure).
"""

# No `from __future__ import annotations` here: FastAPI must see the real body types on the
# methods Serve wraps, or it reads `body` as a query parameter.
import asyncio
import logging
from pathlib import Path

from ray import serve

from recsys.config import EventStoreConfig, IndexConfig, SearchConfig, ServeConfig
from recsys.index import IndexRelease
from recsys.search.engine import check_query
from serving.cold_start import CatalogLog
from serving.engine import Filters, Job, SearchJob, ServingModel, context_of
from serving.events import MemoryEventStore, RedisEventStore, now_ms
from serving.http import Limits, RequestError, api
from serving.metrics import ServingMetrics
from serving.schemas import (
    EventRequest,
    EventResponse,
    Explanation,
    ItemResponse,
    NewItemRequest,
    NewItemResponse,
    RankRequest,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    SearchHit,
    SearchRequest,
    SearchResponse,
    SearchSignals,
)

logger = logging.getLogger("ray.serve")


@serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
class EventStoreDeployment:
    """The memory backend's single owner: a dict, a log written before each acknowledgement, snapshots."""

    def __init__(self, folder: str, cfg: dict):
        self.store = MemoryEventStore(folder, EventStoreConfig.model_validate(cfg))

    def record(self, user_id: str, item_index: int, event: str, timestamp_ms: int) -> int:
        return self.store.record(user_id, item_index, event, timestamp_ms)

    def recent(self, user_id: str) -> list:
        return self.store.recent(user_id)


class _RemoteEvents:
    def __init__(self, handle):
        self.handle = handle

    async def record(self, *args) -> int:
        return await self.handle.record.remote(*args)

    async def recent(self, user_id: str) -> list:
        return await self.handle.recent.remote(user_id)


class _LocalEvents:
    def __init__(self, store):
        self.store = store

    async def record(self, *args) -> int:
        return self.store.record(*args)

    async def recent(self, user_id: str) -> list:
        return self.store.recent(user_id)


@serve.deployment
@serve.ingress(api)
class RecommenderDeployment:
    def __init__(self, serve_config: dict, index_config: dict, index_root: str, interaction_events: list[str], session_gap_ms: int,
                 events=None, search_config: dict | None = None, items_log: str | None = None):
        import torch

        torch.set_num_threads(1)
        self.cfg = ServeConfig.model_validate(serve_config)
        self.index_cfg = IndexConfig.model_validate(index_config)
        self.search_cfg = SearchConfig.model_validate(search_config or {})
        self.items_log = CatalogLog(items_log) if items_log else None
        self.index_root = Path(index_root)
        self.interactions = set(interaction_events)
        self.session_gap_ms = session_gap_ms
        self.events = _RemoteEvents(events) if events is not None else _LocalEvents(RedisEventStore(self.cfg.events))
        self.active: ServingModel | None = None
        self.swap_error: str | None = None
        self.metrics = ServingMetrics()
        Limits.max_body_bytes, Limits.metrics = self.cfg.max_body_bytes, self.metrics
        self._score.set_max_batch_size(self.cfg.batching.max_batch_size)
        self._score.set_batch_wait_timeout_s(self.cfg.batching.batch_wait_timeout_s)
        self._search.set_max_batch_size(self.cfg.batching.max_batch_size)
        self._search.set_batch_wait_timeout_s(self.cfg.batching.batch_wait_timeout_s)

    async def reconfigure(self, user_config: dict) -> None:
        try:
            release = IndexRelease.load(self.index_root / str(user_config["index_version"]))
        except (KeyError, OSError, ValueError) as exc:
            self.swap_error = f"user_config {user_config!r}: {exc!r}"
            if self.active is None:
                raise
            return
        if self.active is not None and self.active.version == release.version:
            return
        try:
            # Load and check in a thread: the replica keeps answering on the current version meanwhile.
            candidate = await asyncio.to_thread(self._load_checked, release)
        except Exception as exc:  # noqa: BLE001 - whatever broke the new version, the current one keeps serving
            self.swap_error = f"{release.version}: {exc}"
            logger.error("refused to switch to %s: %s", release.version, exc)
            if self.active is None:
                raise
            return
        old = self.active
        self.active, self.swap_error = candidate, None
        self.metrics.serving((old.version, old.model_version) if old else None, (candidate.version, candidate.model_version))
        logger.info("now serving %s (was %s)", candidate.version, old.version if old else None)

    def _load_checked(self, release: IndexRelease) -> ServingModel:
        model = ServingModel(release, self.cfg, self.index_cfg, self.search_cfg)
        model.check(self.index_cfg.min_recall_at_100)
        self._sync_items(model)  # items added while the previous version served
        return model

    # ---- helpers -----------------------------------------------------------------------
    def _model(self) -> ServingModel:
        if self.active is None:
            raise RequestError("service", "no model version is loaded yet", status=503)
        self._sync_items(self.active)
        return self.active

    def _sync_items(self, model: ServingModel) -> None:
        """Ingest items another replica (or this one before a restart) added through POST /items."""
        if self.items_log is None:
            return
        new, model.items_offset = self.items_log.read_from(model.items_offset)
        for item in new:
            if item["item_id"] not in model.index_of:
                model.add_item(item)

    def _indices(self, model: ServingModel, ids: list[str], field: str) -> list[int]:
        unknown = [f"{field}[{i}]={x!r}" for i, x in enumerate(ids) if x not in model.index_of]
        if unknown:
            raise RequestError(field, "unknown item ids: " + ", ".join(unknown[:5]))
        return [model.index_of[x] for x in ids]

    async def _user_state(self, model: ServingModel, user_id, item_ids, timestamp) -> tuple[list[int], set[int], tuple]:
        """(history, purchased, ranking context): logged history, then live events, then the request's items."""
        recent = item_ids or []
        if len(recent) > self.cfg.max_history:
            raise RequestError("item_ids", f"at most {self.cfg.max_history} items (serve.max_history), got {len(recent)}")
        extra = self._indices(model, recent, "item_ids")
        history = list(model.histories.get(user_id, [])) if user_id else []
        purchased = set(model.purchased.get(user_id, ())) if user_id else set()
        live = await self.events.recent(user_id) if user_id else []
        now = timestamp if timestamp is not None else now_ms()
        in_session = 0
        for item_index, event, ts in live:
            if event in self.interactions:
                history.append(item_index)
            if event == "purchase":
                purchased.add(item_index)
            in_session += now - ts <= self.session_gap_ms
        return history + extra, purchased, context_of(now, in_session)

    def _run_batch(self, jobs: list[tuple], run) -> list[list]:
        """(model, job) pairs → each job's results; `run(model, jobs)` does one batch's compute."""
        model = jobs[0][0]
        if any(m is not model for m, _ in jobs):  # a swap happened between requests: run per version
            for m, job in jobs:
                run(m, [job])
        else:
            self.metrics.stages(run(model, [job for _, job in jobs]))
        self.metrics.batch_size.observe(len(jobs))
        return [job.results for _, job in jobs]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _score(self, jobs: list[tuple]) -> list[list]:
        return self._run_batch(jobs, ServingModel.score_jobs)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _search(self, jobs: list[tuple]) -> list[list]:
        return self._run_batch(jobs, ServingModel.search_jobs)

    def _items(self, model, results, job_history, context, explain) -> list[RecommendedItem]:
        out = []
        for index, score, retrieval in results:
            why = Explanation(**model.explain(job_history, index, context)) if explain else None
            out.append(RecommendedItem(score=score, retrieval_score=retrieval, explanation=why, **model.item(index)))
        return out

    # ---- endpoints ---------------------------------------------------------------------
    @api.get("/healthz")
    def healthz(self) -> dict:
        """Liveness: the replica answers. Says which version it serves (if any yet)."""
        m = self.active
        return {"status": "ok", "version": m.version if m else None, "model_version": m.model_version if m else None,
                "items": len(m.catalog) if m else 0, "swap_error": self.swap_error,
                "replica": serve.get_replica_context().replica_id.unique_id}

    @api.get("/readyz")
    async def readyz(self) -> dict:
        """Readiness: a checked version is loaded and the event store answers."""
        m = self._model()
        try:
            await asyncio.wait_for(self.events.recent("__readyz__"), timeout=2.0)
        except Exception as exc:  # noqa: BLE001 - any store failure means not ready
            raise RequestError("events", f"event store unavailable: {exc}", status=503) from None
        return {"status": "ready", "version": m.version, "ranker": "ctr" if m.ranker is not None else "retrieval"}

    @api.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=True)
    async def recommend(self, body: RecommendRequest) -> RecommendResponse:
        model = self._model()
        k = body.k or self.cfg.default_k
        if k > self.cfg.max_k:
            raise RequestError("k", f"k must be ≤ {self.cfg.max_k} (serve.max_k), got {k}")
        history, purchased, context = await self._user_state(model, body.user_id, body.item_ids, body.timestamp)
        f = body.filters
        filters = Filters(f.categories, f.price_min, f.price_max, f.exclude_purchased) if f else None
        exclude = (set(history) if self.cfg.exclude_history else set()) | (purchased if f and f.exclude_purchased else set())
        allowed = model.allowed(filters, exclude)
        base = dict(user_id=body.user_id, version=model.version, model_version=model.model_version)
        if not history:
            self.metrics.cold_start.inc()
            items = [RecommendedItem(score=s, **model.item(i)) for i, s in model.popular_items(k, allowed)]
            return RecommendResponse(cold_start=True, ranker="popularity", items=items, **base)
        job = Job(history=history, k=k, context=context, allowed=allowed)
        results = await self._score((model, job))
        ranker = "ctr" if model.ranker is not None else "retrieval"
        return RecommendResponse(cold_start=False, ranker=ranker, items=self._items(model, results, history, context, body.explain), **base)

    @api.post("/rank", response_model=RecommendResponse, response_model_exclude_none=True)
    async def rank(self, body: RankRequest) -> RecommendResponse:
        model = self._model()
        if len(body.candidates) > self.cfg.candidates:
            raise RequestError("candidates", f"at most {self.cfg.candidates} candidates (serve.candidates), got {len(body.candidates)}")
        candidates = self._indices(model, body.candidates, "candidates")
        history, _, context = await self._user_state(model, body.user_id, body.item_ids, body.timestamp)
        base = dict(user_id=body.user_id, version=model.version, model_version=model.model_version)
        if not history:
            ranked = sorted(candidates, key=lambda i: -model.catalog[i]["train_count"])
            items = [RecommendedItem(score=float(model.catalog[i]["train_count"]), **model.item(i)) for i in ranked]
            return RecommendResponse(cold_start=True, ranker="popularity", items=items, **base)
        results = model.rank_given(history, candidates, context)
        ranker = "ctr" if model.ranker is not None else "retrieval"
        return RecommendResponse(cold_start=False, ranker=ranker, items=self._items(model, results, history, context, body.explain), **base)

    @api.post("/search", response_model=SearchResponse, response_model_exclude_none=True)
    async def search(self, body: SearchRequest) -> SearchResponse:
        """Keyword search: BM25 and the text encoder over item text, personalised by the user's history."""
        model = self._model()
        if model.search is None:
            raise RequestError("service", f"version {model.version} has no text index; build it with search.enabled: true", status=503)
        try:
            query = check_query(body.query, self.search_cfg.max_query_chars, self.search_cfg.max_query_terms)
        except ValueError as exc:
            raise RequestError("query", str(exc)) from None
        k = body.k or self.cfg.default_k
        if k > self.cfg.max_k:
            raise RequestError("k", f"k must be ≤ {self.cfg.max_k} (serve.max_k), got {k}")
        mode = body.mode or ("hybrid_personal" if body.user_id or body.item_ids else "hybrid")
        history: list[int] = []
        if mode == "hybrid_personal":
            if not (body.user_id or body.item_ids):
                raise RequestError("mode", "hybrid_personal needs user_id or item_ids to personalise with")
            history, _, _ = await self._user_state(model, body.user_id, body.item_ids, None)
            if not history:  # nothing known about this user: relevance alone
                mode = "hybrid"
        f = body.filters
        allowed = model.allowed(Filters(f.categories, f.price_min, f.price_max, False, f.brands) if f else None, set())
        hits = await self._search((model, SearchJob(query, history, k, mode, allowed)))
        texts = model.search.texts
        items = [
            SearchHit(score=h.score, **model.item(h.item), signals=SearchSignals(
                lexical_terms=model.search.lexical.matched_terms(query, texts[h.item - 1]), lexical=h.lexical, semantic=h.semantic, personal=h.personal))
            for h in hits
        ]
        return SearchResponse(query=query, mode=mode, user_id=body.user_id, version=model.version, items=items)

    @api.post("/items", response_model=NewItemResponse, status_code=201)
    async def add_item(self, body: NewItemRequest) -> NewItemResponse:
        """Cold start: a new item is searchable and recommendable from its text and attributes at once."""
        model = self._model()
        if body.item_id in model.index_of:
            raise RequestError("item_id", f"item {body.item_id!r} is already in the catalog; item ids are never reused", status=409)
        item = body.model_dump()
        if self.items_log is not None:
            self.items_log.append(item)  # durable before it is acknowledged; every replica ingests it from here
        info = model.add_item(item)
        return NewItemResponse(item_id=body.item_id, **info)

    @api.post("/events", response_model=EventResponse)
    async def record_event(self, body: EventRequest) -> EventResponse:
        model = self._model()
        index = self._indices(model, [body.item_id], "item_id")[0]
        count = await self.events.record(body.user_id, index, body.event, body.timestamp if body.timestamp is not None else now_ms())
        return EventResponse(user_id=body.user_id, recorded=True, recent_events=count)

    @api.get("/items/{item_id}", response_model=ItemResponse)
    def get_item(self, item_id: str) -> ItemResponse:
        model = self._model()
        index = model.index_of.get(item_id)
        if index is None:
            raise RequestError("item_id", f"no item {item_id!r} in the served catalog (version {model.version})", status=404)
        row = model.catalog[index]
        return ItemResponse(attributes=row["attributes"] or [], train_count=row["train_count"], **model.item(index))


def default_events_folder(artifacts_root: Path) -> Path:
    return artifacts_root / "serving" / "events"
