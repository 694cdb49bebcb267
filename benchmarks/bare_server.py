"""The serving benchmark's baseline: one plain FastAPI + uvicorn process running the same
retrieval and ranking compute as the Serve app (the library's recsys.online engine), with no Ray at all.

    python -m benchmarks.bare_server --config configs/demo.yaml --port 8100 [--batched]

`--batched` batches concurrent requests as `@serve.batch` does (serve.batching's size and
wait), so Serve ÷ bare compares like with like.
"""

# No `from __future__ import annotations`: FastAPI must resolve the body types of the local routes.

import argparse
import asyncio
import sys
import tempfile


class MicroBatcher:
    """Concurrent jobs gathered for up to `wait_s` (at most `size`), then run as one batch on the
    event loop, as `@serve.batch` runs them. (The Serve replica computes a request alone in it at
    once; here no request ever waits on I/O inside the handler, so every one would count as alone,
    and the baseline would not batch at all.)"""

    def __init__(self, run, size: int, wait_s: float):
        self.run, self.size, self.wait_s = run, size, wait_s
        self.pending: list[tuple] = []
        self.timer = None

    async def submit(self, job):
        done = asyncio.get_running_loop().create_future()
        self.pending.append((job, done))
        if len(self.pending) >= self.size:
            self._flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.wait_s, self._flush)
        return await done

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending = self.pending[: self.size], self.pending[self.size :]
        if not batch:
            return
        try:
            self.run([job for job, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiter gets the batch's error
            for _, done in batch:
                if not done.done():  # a client that went away cancelled its future
                    done.set_exception(exc)
        else:
            for job, done in batch:
                if not done.done():
                    done.set_result(job)
        if self.pending:
            self.timer = asyncio.get_running_loop().call_later(self.wait_s, self._flush)


def make_app(config: str, overrides: list[str], batched: bool = False):
    import torch
    from fastapi import FastAPI, HTTPException

    from recsys.artifacts import ArtifactStore
    from recsys.config import load_config
    from recsys.online.engine import EngineSpec, InvalidRequest, OnlineEngine, Recommendation
    from recsys.online.events import MemoryEventStore
    from serving.schemas import RecommendRequest, RecommendResponse

    torch.set_num_threads(1)
    cfg = load_config(config, overrides)
    spec = EngineSpec.of(cfg)  # /recommend only: no text index to load
    engine = OnlineEngine(ArtifactStore.of(cfg).latest("index"), spec.model_copy(update={"search": spec.search.model_copy(update={"enabled": False})}))
    events = MemoryEventStore(tempfile.mkdtemp(prefix="bare-events-"), cfg.serve.events)
    app = FastAPI()
    batching = cfg.serve.batching
    batcher = MicroBatcher(engine.run_recommend, batching.max_batch_size, batching.batch_wait_timeout_s)

    def prepared(body: RecommendRequest):
        try:
            state = engine.user_state(body.user_id, body.item_ids, events.recent(body.user_id) if body.user_id else [], body.timestamp)
            return engine.prepare_recommend(state, body.k, body.filters.to_engine() if body.filters else None, body.explain)
        except InvalidRequest as exc:
            raise HTTPException(exc.status, {"field": exc.field, "message": exc.message}) from None

    if batched:
        @app.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=True)
        async def recommend_batched(body: RecommendRequest) -> RecommendResponse:
            """The Serve deployment's /recommend: the same engine calls, concurrent requests batched."""
            job = prepared(body)
            answer = job if isinstance(job, Recommendation) else engine.finish_recommend(await batcher.submit(job))
            return RecommendResponse.of(engine, body.user_id, answer)
    else:
        @app.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=True)
        def recommend(body: RecommendRequest) -> RecommendResponse:
            """The Serve deployment's /recommend through the same engine calls, one request at a time."""
            job = prepared(body)
            if not isinstance(job, Recommendation):
                engine.run_recommend([job])
                job = engine.finish_recommend(job)
            return RecommendResponse.of(engine, body.user_id, job)

    return app


def main() -> int:
    import uvicorn

    from recsys.cli import config_parent

    parser = argparse.ArgumentParser(description=__doc__, parents=[config_parent("configs/demo.yaml")])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--batched", action="store_true", help="batch concurrent requests as the Serve replica does")
    args = parser.parse_args()
    uvicorn.run(make_app(args.config, args.overrides, args.batched), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
