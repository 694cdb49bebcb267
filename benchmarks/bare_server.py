"""The serving benchmark's baseline: one plain FastAPI + uvicorn process running the same
retrieval and ranking compute as the Serve app (serving.engine), with no Ray at all.

    python benchmarks/bare_server.py --config configs/demo.yaml --port 8100
"""

# No `from __future__ import annotations`: FastAPI must resolve the body types of the local routes.

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_app(config: str, overrides: list[str]):
    import torch
    from fastapi import FastAPI

    from recsys.config import load_config
    from recsys.index import latest_index
    from serving.engine import Job, ServingModel, context_of
    from serving.events import MemoryEventStore, now_ms
    from serving.schemas import RecommendedItem, RecommendRequest, RecommendResponse

    torch.set_num_threads(1)
    cfg = load_config(config, overrides)
    model = ServingModel(latest_index(cfg), cfg.serve, cfg.index)
    events = MemoryEventStore(tempfile.mkdtemp(prefix="bare-events-"), cfg.serve.events)
    app = FastAPI()

    @app.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=True)
    def recommend(body: RecommendRequest) -> RecommendResponse:
        k = body.k or cfg.serve.default_k
        history = list(model.histories.get(body.user_id, [])) + [i for i, _, _ in events.recent(body.user_id or "")]
        base = dict(user_id=body.user_id, version=model.version, model_version=model.model_version)
        allowed = model.allowed(None, set(history) if cfg.serve.exclude_history else set())
        if not history:
            items = [RecommendedItem(score=s, **model.item(i)) for i, s in model.popular_items(k, allowed)]
            return RecommendResponse(cold_start=True, ranker="popularity", items=items, **base)
        job = Job(history=history, k=k, context=context_of(now_ms(), 0), allowed=allowed)
        model.score_jobs([job])
        items = [RecommendedItem(score=s, retrieval_score=r, **model.item(i)) for i, s, r in job.results]
        return RecommendResponse(cold_start=False, ranker="ctr" if model.ranker else "retrieval", items=items, **base)

    return app


def main() -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(make_app(args.config, args.overrides), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
