"""The Serve deployments: the ingress (HTTP over the library's OnlineEngine: retrieval, ranking and
search in one replica) and the event store. The compute is recsys.online's; this module holds only
what Ray Serve adds: batching, the version swap, replicas sharing events and new items.

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
from contextlib import contextmanager
from pathlib import Path

from ray import serve

from recsys.artifacts import IndexRelease
from recsys.config import EventStoreConfig
from recsys.online.ads import AdEngine, AdJob
from recsys.online.cold_start import CatalogLog
from recsys.online.engine import EngineSpec, InvalidRequest, OnlineEngine, Recommendation, now_ms
from recsys.online.events import MemoryEventStore, RedisEventStore
from recsys.online.forecast import ForecastService
from serving.http import Guard, RequestError, api
from serving.metrics import ServingMetrics
from serving.schemas import (
    AdHit,
    AdsRequest,
    AdsResponse,
    CampaignResponse,
    CampaignUpdate,
    EventRequest,
    EventResponse,
    ForecastResponse,
    ItemResponse,
    NewItemRequest,
    NewItemResponse,
    RankRequest,
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


@serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
class AdLedgerDeployment:
    """The ad ledger's single owner (budgets, spend, frequency caps, pacing, impressions), so that a
    budget holds across every ingress replica; each day's log makes a restart resume its spend.
    Its methods are `async` with no await inside: they run one at a time on the replica's event loop,
    so an auction's check of budget and frequency cap and its record of the impressions are one step
    (sync methods would run in Serve's thread pool, side by side)."""

    def __init__(self, export_path: str, folder: str, cfg: dict):
        from recsys.ads.world import AdWorld
        from recsys.artifacts import ModelExport
        from recsys.config import AdsConfig
        from recsys.online.ads import AdBook

        export = ModelExport.load(export_path)
        world = AdWorld(export.meta.extra["ad_world"])
        c = world.campaigns
        self.item_of = c["item_id"].tolist()
        # one folder per ad world: its logs name campaigns by their position in this world's table
        self.book = AdBook(c["bid"].to_numpy(), c["daily_budget"].to_numpy(), world.campaign_traffic,
                           AdsConfig.model_validate(cfg), Path(folder) / world.version)

    async def fill(self, user_key: str, campaigns, pctr, relevance, timestamp_ms: int, positions: list) -> list:
        return self.book.fill(user_key, campaigns, pctr, relevance, timestamp_ms, positions)

    async def click(self, impression_id: str, item_id: str) -> dict:
        """Charge an ad click once; an unknown impression, or one of another item, is refused (nothing charged)."""
        from recsys.ads.ledger import UnknownImpression

        try:
            campaign = self.book.campaign_of(impression_id)
        except UnknownImpression:
            return {"error": f"no ad impression {impression_id!r} was served (today or yesterday); send the id /ads returned"}
        if self.item_of[campaign] != item_id:
            return {"error": f"impression {impression_id!r} showed item {self.item_of[campaign]!r}, not {item_id!r}"}
        charged, first = self.book.click(impression_id)
        return {"charged": charged, "duplicate": not first}

    async def campaign(self, campaign: int, timestamp_ms: int) -> dict:
        return self.book.campaign(campaign, timestamp_ms)

    async def update(self, campaign: int, bid, daily_budget) -> None:
        self.book.update(campaign, bid, daily_budget)


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


# Defined before the deployment class: Serve serializes the class when it is decorated, with the
# module globals it refers to at that moment.
@contextmanager
def engine_errors():
    """The engine's InvalidRequest as the HTTP error body naming the field."""
    try:
        yield
    except InvalidRequest as exc:
        raise RequestError(exc.field, exc.message, status=exc.status) from None


@serve.deployment
@serve.ingress(api)
class RecommenderDeployment:
    def __init__(self, spec: dict, events=None, ad_ledger=None):
        import torch

        torch.set_num_threads(1)
        self.spec = EngineSpec.model_validate(spec)
        self.cfg = self.spec.serve
        self.items_log = CatalogLog(self.spec.items_log) if self.spec.items_log else None
        self.events = _RemoteEvents(events) if events is not None else _LocalEvents(RedisEventStore(self.cfg.events))
        self.active: OnlineEngine | None = None
        self.forecasts: ForecastService | None = None
        self.swap_error: str | None = None
        self.forecast_error: str | None = None  # the last forecast swap that failed (the index swap has its own)
        self.metrics = ServingMetrics()
        self.busy = 0  # requests inside /recommend, /search or /ads now (see _compute)
        self.ads, self.ad_ledger, self.ads_error = None, ad_ledger, None
        if self.spec.ads is not None:
            self._load_ads()
        auth = None
        if self.cfg.auth.enabled:
            from serving.auth import Authenticator

            auth = Authenticator.from_env(self.cfg.auth.token_env)
        self.guard = Guard(self.cfg.max_body_bytes, self.metrics, auth)  # read by serving.http's middleware
        for batched in (self._score, self._search, self._ads):
            batched.set_max_batch_size(self.cfg.batching.max_batch_size)
            batched.set_batch_wait_timeout_s(self.cfg.batching.batch_wait_timeout_s)

    async def reconfigure(self, user_config: dict) -> None:
        await self._swap_forecast(user_config.get("forecast_version"))
        try:
            release = self.spec.release(str(user_config["index_version"]))
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

    def _load_ads(self) -> None:
        """The ad engine of the export the app was built with; /ads answers 503 with the reason when it cannot load."""
        from recsys.ads.world import AdWorld
        from recsys.artifacts import ModelExport

        if self.spec.ads_export is None or self.ad_ledger is None:
            self.ads_error = "ads.enabled is on but no ads export is published: run the ads stage (python ray_jobs/train_ads.py)"
            return
        try:
            self.ads = AdEngine(self.spec.ads_export, AdWorld(ModelExport.load(self.spec.ads_export).meta.extra["ad_world"]), self.spec.ads)
        except Exception as exc:  # noqa: BLE001 - the other routes keep serving; /ads says why it cannot
            self.ads_error = f"ads export {self.spec.ads_export}: {exc}"
            logger.error("ads not served: %s", self.ads_error)

    async def _swap_forecast(self, version: str | None) -> None:
        """Serve forecast `version` (loaded beside the current one, then switched to); without one, the
        latest published when none is loaded yet. A version that does not load leaves the current
        one serving."""
        from pathlib import Path

        from recsys.artifacts import ForecastRelease, latest_version

        root = Path(self.spec.forecast_root) if self.spec.forecast_root else None
        if root is None or (version is None and (self.forecasts is not None or not (root / "LATEST").is_file())):
            return
        if self.forecasts is not None and self.forecasts.version == version:
            return
        try:
            release = ForecastRelease.load(root / version if version else latest_version(root, "forecast"))
            self.forecasts, self.forecast_error = await asyncio.to_thread(ForecastService, release), None
        except Exception as exc:  # noqa: BLE001 - the current forecast keeps serving
            self.forecast_error = f"forecast {version}: {exc}"
            logger.error("refused to switch to forecast %s: %s", version, exc)

    def _load_checked(self, release: IndexRelease) -> OnlineEngine:
        engine = OnlineEngine(release, self.spec)
        engine.check(self.spec.index.min_recall_at_100)
        if self.items_log is not None:
            engine.sync_items(self.items_log)  # items added while the previous version served
        return engine

    # ---- helpers -----------------------------------------------------------------------
    def _engine(self) -> OnlineEngine:
        if self.active is None:
            raise RequestError("service", "no model version is loaded yet", status=503)
        if self.items_log is not None:
            self.active.sync_items(self.items_log)  # items another replica added through POST /items
        return self.active

    async def _state(self, engine: OnlineEngine, user_id, item_ids, timestamp):
        live = await self.events.recent(user_id) if user_id else []
        return engine.user_state(user_id, item_ids, live, timestamp)

    def _run_batch(self, jobs: list[tuple], run) -> list:
        """(engine, job) pairs → the jobs; `run(engine, jobs)` does one batch's compute."""
        engine = jobs[0][0]
        if any(e is not engine for e, _ in jobs):  # a swap happened between requests: run per version
            for e, job in jobs:
                run(e, [job])
        else:
            self.metrics.stages(run(engine, [job for _, job in jobs]))
        self.metrics.batch_size.observe(len(jobs))
        return [job for _, job in jobs]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _score(self, jobs: list[tuple]) -> list:
        return self._run_batch(jobs, OnlineEngine.run_recommend)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _search(self, jobs: list[tuple]) -> list:
        return self._run_batch(jobs, OnlineEngine.run_search)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _ads(self, jobs: list[tuple]) -> list:
        return self._run_batch(jobs, AdEngine.run_jobs)

    async def _compute(self, batched, run, engine: OnlineEngine, job):
        """A request alone in the replica is computed at once: `@serve.batch` would hold it for the
        whole batch_wait_timeout_s waiting for company that is not coming (measured: +2 ms at one
        client). With others in flight it joins the batch."""
        if self.busy == 1:
            return self._run_batch([(engine, job)], run)[0]
        return await batched((engine, job))


    # ---- endpoints ---------------------------------------------------------------------
    @api.get("/healthz")
    def healthz(self) -> dict:
        """Liveness: the replica answers. Says which version it serves (if any yet)."""
        m = self.active
        return {"status": "ok", "version": m.version if m else None, "model_version": m.model_version if m else None,
                "items": len(m.catalog) if m else 0, "swap_error": self.swap_error, "forecast_error": self.forecast_error,
                "forecast_version": self.forecasts.version if self.forecasts else None,
                "replica": serve.get_replica_context().replica_id.unique_id}

    @api.get("/readyz")
    async def readyz(self) -> dict:
        """Readiness: a checked version is loaded and the event store answers."""
        m = self._engine()
        try:
            await asyncio.wait_for(self.events.recent("__readyz__"), timeout=2.0)
        except Exception as exc:  # noqa: BLE001 - any store failure means not ready
            raise RequestError("events", f"event store unavailable: {exc}", status=503) from None
        return {"status": "ready", "version": m.version, "ranker": m.ranker_name}

    @api.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=True)
    async def recommend(self, body: RecommendRequest) -> RecommendResponse:
        engine = self._engine()
        self.busy += 1
        try:
            with engine_errors():
                state = await self._state(engine, body.user_id, body.item_ids, body.timestamp)
                job = engine.prepare_recommend(state, body.k, body.filters.to_engine() if body.filters else None, body.explain)
            if isinstance(job, Recommendation):
                self.metrics.cold_start.inc()  # /recommend's cold starts (not /rank's)
            else:
                job = engine.finish_recommend(await self._compute(self._score, OnlineEngine.run_recommend, engine, job))
        finally:
            self.busy -= 1
        return RecommendResponse.of(engine, body.user_id, job)

    @api.post("/rank", response_model=RecommendResponse, response_model_exclude_none=True)
    async def rank(self, body: RankRequest) -> RecommendResponse:
        engine = self._engine()
        with engine_errors():
            state = await self._state(engine, body.user_id, body.item_ids, body.timestamp)
            answer = engine.rank(state, body.candidates, body.explain)
        return RecommendResponse.of(engine, body.user_id, answer)

    @api.post("/search", response_model=SearchResponse, response_model_exclude_none=True)
    async def search(self, body: SearchRequest) -> SearchResponse:
        """Keyword search: BM25 and the text encoder over item text, personalised by the user's history."""
        engine = self._engine()
        self.busy += 1
        try:
            with engine_errors():
                wants_personal = (body.mode or "hybrid_personal") == "hybrid_personal" and bool(body.user_id or body.item_ids)
                state = await self._state(engine, body.user_id, body.item_ids, None) if wants_personal else None
                job = engine.prepare_search(body.query, body.k, body.mode, state, body.filters.to_engine() if body.filters else None)
            job = await self._compute(self._search, OnlineEngine.run_search, engine, job)
        finally:
            self.busy -= 1
        items = [
            SearchHit(score=h.score, **engine.item(h.item), signals=SearchSignals(
                lexical_terms=engine.lexical_terms(job.query, h.item), lexical=h.lexical, semantic=h.semantic, personal=h.personal))
            for h in job.results
        ]
        return SearchResponse(query=job.query, mode=job.mode, user_id=body.user_id, version=engine.version, items=items)

    @api.post("/ads", response_model=AdsResponse)
    async def ads(self, body: AdsRequest) -> AdsResponse:
        """Ads for the user's page: an auction (pCTR × bid, second price) over the targeting-eligible
        campaigns with budget, frequency cap and pacing; click events charge through POST /events."""
        engine, ads = self._engine(), self._ad_engine()
        timestamp = body.context.timestamp if body.context and body.context.timestamp is not None else now_ms()
        if max(body.slots) >= ads.slots:
            raise RequestError("slots", f"this ad world has slots 0..{ads.slots - 1}, got {max(body.slots)}")
        self.busy += 1
        try:
            with engine_errors():
                state = await self._state(engine, body.user_id, body.item_ids, timestamp)
            job = await self._compute(self._ads, AdEngine.run_jobs, ads, AdJob(state.history, *state.context[:2]))
        finally:
            self.busy -= 1
        user_key = body.user_id or ""  # "": no identity, no frequency cap (and nothing kept per anonymous request)
        slate = await self.ad_ledger.fill.remote(user_key, job.campaigns, job.pctr, job.relevance, timestamp, sorted(body.slots))
        self.metrics.auction(len(body.slots), slate)
        c = ads.campaigns
        hits = [AdHit(slot=a["slot"], campaign_id=c["campaign_id"].iat[a["campaign"]], advertiser_id=c["advertiser_id"].iat[a["campaign"]],
                      item_id=c["item_id"].iat[a["campaign"]], pctr=round(a["pctr"], 6), ecpm=round(a["ecpm"], 4),
                      price_per_click=a["price"], impression_id=a["impression_id"]) for a in slate]
        return AdsResponse(user_id=body.user_id, ads=hits, candidates=len(job.campaigns), model_version=ads.export.version)

    @api.get("/campaigns/{campaign_id}", response_model=CampaignResponse)
    async def campaign(self, campaign_id: str, timestamp: int | None = None) -> CampaignResponse:
        """A campaign's settings, today's spend and its pacing state (`timestamp`: that day's, under ads.clock: request)."""
        ads, index = self._campaign(campaign_id)
        state = await self.ad_ledger.campaign.remote(index, timestamp if timestamp is not None else now_ms())
        row = ads.campaigns.iloc[index]
        return CampaignResponse(campaign_id=campaign_id, advertiser_id=row["advertiser_id"], item_id=row["item_id"],
                                target_categories=list(row["target_categories"]), hours=[int(row["hour_start"]), int(row["hour_end"])], **state)

    @api.put("/campaigns/{campaign_id}", response_model=CampaignResponse)
    async def update_campaign(self, campaign_id: str, body: CampaignUpdate) -> CampaignResponse:
        """An advertiser changes its bid or daily budget (a write): the next auction uses it."""
        _, index = self._campaign(campaign_id)
        await self.ad_ledger.update.remote(index, body.bid, body.daily_budget)
        return await self.campaign(campaign_id)

    def _campaign(self, campaign_id: str):
        ads = self._ad_engine()
        index = ads.index_of.get(campaign_id)
        if index is None:
            raise RequestError("campaign_id", f"no campaign {campaign_id!r} in the served ad world", status=404)
        return ads, index

    def _ad_engine(self):
        if self.ads is None:
            raise RequestError("ads", self.ads_error or "ads are off (ads.enabled: false)", status=503)
        return self.ads

    @api.post("/items", response_model=NewItemResponse, status_code=201)
    async def add_item(self, body: NewItemRequest) -> NewItemResponse:
        """Cold start: a new item is searchable and recommendable from its text and attributes at once."""
        engine = self._engine()
        if body.item_id in engine.catalog.index_of:
            raise RequestError("item_id", f"item {body.item_id!r} is already in the catalog; item ids are never reused", status=409)
        item = body.model_dump()
        if self.items_log is not None:
            self.items_log.append(item)  # durable before it is acknowledged; every replica ingests it from here
        with engine_errors():
            info = engine.add_item(item)
        return NewItemResponse(item_id=body.item_id, **info)

    @api.post("/events", response_model=EventResponse)
    async def record_event(self, body: EventRequest) -> EventResponse:
        engine = self._engine()
        with engine_errors():
            index = engine.indices([body.item_id], "item_id")[0]
        charge = {}
        if body.impression_id is not None:  # an ad click: charged once, before the event is recorded; refused when unknown
            self._ad_engine()
            charge = await self.ad_ledger.click.remote(body.impression_id, body.item_id)
            if "error" in charge:
                raise RequestError("impression_id", charge["error"])
            if charge["charged"] > 0:  # a repeat click charges 0, which Ray's Counter.inc refuses
                self.metrics.ad_spend.inc(charge["charged"])
        count = await self.events.record(body.user_id, index, body.event, body.timestamp if body.timestamp is not None else now_ms())
        return EventResponse(user_id=body.user_id, recorded=True, recent_events=count, **charge)

    @api.get("/forecast/{item_id}", response_model=ForecastResponse)
    def forecast(self, item_id: str, horizon: int | None = None) -> ForecastResponse:
        """Demand forecast of a product (P10/P50/P90 per week) and its replenishment advice."""
        if self.forecasts is None:
            raise RequestError("forecast", "no demand forecast is loaded: run the forecast stage "
                               "(recsys forecast --config …) and redeploy, or set forecast.enabled", status=503)
        with engine_errors():
            return ForecastResponse(**self.forecasts.answer(item_id, horizon))

    @api.get("/items/{item_id}", response_model=ItemResponse)
    def get_item(self, item_id: str) -> ItemResponse:
        engine = self._engine()
        index = engine.catalog.index_of.get(item_id)
        if index is None:
            raise RequestError("item_id", f"no item {item_id!r} in the served catalog (version {engine.version})", status=404)
        row = engine.catalog.rows[index]
        return ItemResponse(attributes=row["attributes"] or [], train_count=row["train_count"], **engine.item(index))

