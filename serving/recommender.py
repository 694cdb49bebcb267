"""The recommender deployment: FastAPI ingress and model in one replica.

One deployment on purpose: on a small CPU cluster each Serve hop costs ~10 ms of proxy and
serialisation time (shared/RUNTIME-NOTES.md), more than scoring a 12k-item catalog takes.
"""

# No `from __future__ import annotations` here: FastAPI must see the real body types on the
# methods Serve wraps, or it reads `body` as a query parameter.
import logging
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve

from serving.schemas import ErrorResponse, RecommendedItem, RecommendRequest, RecommendResponse

logger = logging.getLogger("ray.serve")
api = FastAPI(
    title="recsys-platform recommender",
    description="Next-item recommendations from a transformer trained on behaviour sequences.",
    responses={422: {"model": ErrorResponse}},
)


def _field_errors(exc: RequestValidationError) -> list[dict]:
    out = []
    for err in exc.errors():
        loc = list(err.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path"):
            loc = loc[1:]
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "body"
        out.append({"field": field, "message": err.get("msg", "invalid value")})
    return out


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"error": "invalid_request", "detail": _field_errors(exc)})


class RequestError(Exception):
    def __init__(self, field: str, message: str, status: int = 422):
        self.field, self.message, self.status = field, message, status


@api.exception_handler(RequestError)
async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse(
        status_code=exc.status, content={"error": "invalid_request", "detail": [{"field": exc.field, "message": exc.message}]}
    )


@api.exception_handler(Exception)
async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error")
    return JSONResponse(status_code=500, content={"error": "internal_error", "detail": []})


def catalog_fields(items: pa.Table) -> dict[int, dict]:
    """item index → the catalog fields a response shows; missing values stay None (never NaN)."""
    columns = ["item_index", "item_id", "title", "category", "brand", "price"]
    return {row.pop("item_index"): row for row in items.select(columns).to_pylist()}


@serve.deployment
@serve.ingress(api)
class RecommenderDeployment:
    def __init__(self, model_path: str, dataset_path: str, serve_config: dict):
        from recsys.config import ServeConfig
        from recsys.models import SeqRecModel

        torch.set_num_threads(1)
        self.cfg = ServeConfig.model_validate(serve_config)
        self.model = SeqRecModel.from_pretrained(model_path).eval()
        self.model_version = Path(model_path).name
        items = pq.read_table(Path(dataset_path) / "items.parquet")
        self.catalog = catalog_fields(items)
        self.index_of = {row["item_id"]: index for index, row in self.catalog.items()}
        counts = dict(zip(items["item_index"].to_pylist(), items["train_count"].to_pylist(), strict=True))
        seqs = pq.read_table(Path(dataset_path) / "sequences").to_pydict()
        self.histories = dict(zip(seqs["user_id"], seqs["items"], strict=True))
        # Most interactions in training first; ties keep catalog order.
        self.popular = sorted(counts, key=lambda i: -counts[i])[: self.cfg.max_k]
        self.popular_count = {i: float(counts[i]) for i in self.popular}

        from ray.util.metrics import Counter, Histogram

        self.requests = Counter("recsys_recommend_requests", "answered /recommend requests", tag_keys=("cold_start", "model_version"))
        self.latency = Histogram(
            "recsys_recommend_latency_ms", "scoring time of /recommend inside the replica",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500], tag_keys=("model_version",),
        )

    def _item(self, index: int, score: float) -> RecommendedItem:
        return RecommendedItem(score=score, **self.catalog[index])

    @api.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok", "model_version": self.model_version, "items": len(self.catalog)}

    @api.post("/recommend", response_model=RecommendResponse)
    def recommend(self, body: RecommendRequest) -> RecommendResponse:
        k = body.k or self.cfg.default_k
        if k > self.cfg.max_k:
            raise RequestError("k", f"k must be ≤ {self.cfg.max_k} (serve.max_k), got {k}")
        recent = body.item_ids or []
        if len(recent) > self.cfg.max_history:
            raise RequestError("item_ids", f"at most {self.cfg.max_history} items (serve.max_history), got {len(recent)}")
        unknown = [f"item_ids[{i}]={x!r}" for i, x in enumerate(recent) if x not in self.index_of]
        if unknown:
            raise RequestError("item_ids", "unknown item ids: " + ", ".join(unknown[:5]))
        history = list(self.histories.get(body.user_id, [])) + [self.index_of[x] for x in recent]
        started = time.perf_counter()
        response = self._recommend(body.user_id, history, k)
        self.latency.observe((time.perf_counter() - started) * 1000, tags={"model_version": self.model_version})
        self.requests.inc(tags={"cold_start": str(response.cold_start).lower(), "model_version": self.model_version})
        return response

    def _recommend(self, user_id: str | None, history: list[int], k: int) -> RecommendResponse:
        if not history:
            items = [self._item(i, self.popular_count[i]) for i in self.popular[:k]]
            return RecommendResponse(user_id=user_id, cold_start=True, model_version=self.model_version, items=items)
        scores = self.model.score_histories([history])[0]
        if self.cfg.exclude_history:
            scores[torch.as_tensor(history, dtype=torch.long)] = float("-inf")
        top = torch.topk(scores, k=min(k, int(torch.isfinite(scores).sum())))
        items = [self._item(int(i), float(s)) for s, i in zip(top.values, top.indices, strict=True)]
        return RecommendResponse(user_id=user_id, cold_start=False, model_version=self.model_version, items=items)
