"""The FastAPI application the Serve ingress wraps: error shapes, authentication (serving.auth),
body-size limit, per-endpoint metrics.

Every error is JSON `{"error": ..., "detail": [{"field", "message"}]}`; validation errors name
the field (422), oversized bodies answer 413 before they are read, and an unexpected exception
answers 500 without killing the replica.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.schemas import ErrorResponse

logger = logging.getLogger("ray.serve")


class RequestError(Exception):
    def __init__(self, field: str, message: str, status: int = 422):
        self.field, self.message, self.status = field, message, status


def error_body(error: str, field: str, message: str) -> dict:
    return {"error": error, "detail": [{"field": field, "message": message}]}


@dataclass(frozen=True)
class Guard:
    """A replica's request limits and metrics, from its serve config: the deployment instance holds
    it (`self.guard`), and the middleware finds it through Serve's replica context, so no setting
    travels through a module or class global."""

    max_body_bytes: int = 65_536
    metrics: object | None = None  # serving.metrics.ServingMetrics
    auth: object | None = None  # serving.auth.Authenticator (None: serve.auth off)


_UNSET = Guard()


def replica_guard() -> Guard:
    """The Guard of the deployment instance this replica runs (defaults outside a replica)."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        return getattr(serve.get_replica_context().servable_object, "guard", _UNSET)
    except RayServeException:
        return _UNSET


class GuardMiddleware:
    """Pure ASGI: refuse bodies over `Guard.max_body_bytes` with 413 (by Content-Length, or, for a
    chunked body, after reading at most the limit), and record every response's latency and status."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}
        guard = replica_guard()
        limit = guard.max_body_bytes
        route = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and route.startswith(root):
            route = route[len(root):]  # the app's route prefix is not part of the endpoint

        async def reply(code: int, body: dict, extra_headers: tuple = ()) -> None:
            payload = json.dumps(body).encode()
            status["code"] = code
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *extra_headers]
            await send({"type": "http.response.start", "status": code, "headers": headers})
            await send({"type": "http.response.body", "body": payload})

        def too_large() -> dict:
            return error_body("payload_too_large", "body", f"request bodies are limited to {limit} bytes (serve.max_body_bytes)")

        headers = dict(scope.get("headers") or [])
        # Authentication first: an unauthenticated request is answered before any body is read.
        refused = guard.auth.check(scope.get("method", "GET"), route, headers.get(b"authorization")) if guard.auth is not None else None
        declared = headers.get(b"content-length")
        try:
            oversized = declared is not None and int(declared) > limit
        except ValueError:
            oversized = False
        if refused is None and not oversized and declared is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            # Chunked (no Content-Length): read up to the limit here, then replay it to the app.
            chunks, seen, more = [], 0, True
            while more and seen <= limit:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                seen += len(chunks[-1])
                more = message.get("more_body", False)
            oversized = seen > limit
            replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

            async def buffered_receive():
                return replay.pop() if replay else await receive()

            receive = buffered_receive
        if refused is not None:
            code, message = refused
            challenge = ((b"www-authenticate", b'Bearer realm="recsys"'),) if code == 401 else ()
            await reply(code, error_body("unauthorized" if code == 401 else "forbidden", "authorization", message), challenge)
        elif oversized:
            await reply(413, too_large())
        else:

            async def recording_send(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            await self.app(scope, receive, recording_send)
        if guard.metrics is not None:
            guard.metrics.request(route, status["code"], (time.perf_counter() - started) * 1000)


api = FastAPI(
    title="recsys-platform serving",
    description="Recommendations, ranking and real-time events from a transformer trained on behaviour sequences.",
    # What any route may answer besides its own 200/201: a body that is not JSON (400), auth (401/403), routing or an unknown id
    # (404), a conflict (409), a late request (408), an oversized body (413), bad input (422) and
    # overload or a missing artifact (503), all in the one error shape. The OpenAPI fuzz
    # (tests/integration/test_openapi_fuzz.py) holds every response to this list and these schemas.
    responses={code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 408, 409, 413, 422, 503)},
)
api.add_middleware(GuardMiddleware)


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


@api.exception_handler(RequestError)
async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
    kind = {404: "not_found", 409: "conflict", 503: "unavailable"}.get(exc.status, "invalid_request")
    return JSONResponse(status_code=exc.status, content=error_body(kind, exc.field, exc.message))


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Routing and body-parsing errors (404, 405, 400) in the same JSON shape as every other error."""
    kind = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    field = "body" if exc.status_code == 400 else "path"
    return JSONResponse(status_code=exc.status_code, content=error_body(kind, field, str(exc.detail)), headers=getattr(exc, "headers", None))


@api.exception_handler(Exception)
async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error")
    return JSONResponse(status_code=500, content={"error": "internal_error", "detail": []})
