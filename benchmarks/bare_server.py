"""The serving benchmark's baseline: one plain FastAPI + uvicorn process running the same
retrieval and ranking compute as the Serve app (the library's recsys.online engine), with no Ray at all.

    python -m benchmarks.bare_server --config configs/demo.yaml --port 8100
"""

# No `from __future__ import annotations`: FastAPI must resolve the body types of the local routes.

import argparse
import sys
import tempfile


def make_app(config: str, overrides: list[str]):
    import torch
    from fastapi import FastAPI, HTTPException

    from recsys.artifacts import ArtifactStore
    from recsys.config import load_config
    from recsys.online.engine import EngineSpec, InvalidRequest, OnlineEngine
    from recsys.online.events import MemoryEventStore
    from serving.schemas import RecommendRequest, RecommendResponse

    torch.set_num_threads(1)
    cfg = load_config(config, overrides)
    spec = EngineSpec.of(cfg)  # /recommend only: no text index to load
    engine = OnlineEngine(ArtifactStore.of(cfg).latest("index"), spec.model_copy(update={"search": spec.search.model_copy(update={"enabled": False})}))
    events = MemoryEventStore(tempfile.mkdtemp(prefix="bare-events-"), cfg.serve.events)
    app = FastAPI()

    @app.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=True)
    def recommend(body: RecommendRequest) -> RecommendResponse:
        """The Serve deployment's /recommend through the same engine calls, one request at a time."""
        try:
            state = engine.user_state(body.user_id, body.item_ids, events.recent(body.user_id) if body.user_id else [], body.timestamp)
            answer = engine.recommend(state, body.k, body.filters.to_engine() if body.filters else None, body.explain)
        except InvalidRequest as exc:
            raise HTTPException(exc.status, {"field": exc.field, "message": exc.message}) from None
        return RecommendResponse.of(engine, body.user_id, answer)

    return app


def main() -> int:
    import uvicorn

    from recsys.cli import config_parent

    parser = argparse.ArgumentParser(description=__doc__, parents=[config_parent("configs/demo.yaml")])
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(make_app(args.config, args.overrides), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
