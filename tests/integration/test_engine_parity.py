"""The Serve app is thin over the library's OnlineEngine: for the same request, the served answer
equals the engine's answer computed in this process from the same published version (and
test_serving / test_search_serving check the engine's scores against the offline models)."""

import numpy as np
import pytest
import requests

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def engine(served):
    from recsys.online.engine import EngineSpec, OnlineEngine

    return OnlineEngine(served.current, EngineSpec.of(served.cfg))


@pytest.fixture(scope="module")
def histories(tiny_run, engine):
    ids = {v: k for k, v in engine.catalog.index_of.items()}
    return [[ids[int(i)] for i in h] for h in tiny_run.dataset.read_split("test").head(4)["history"]]


def post(served, path, body):
    answer = requests.post(served.base + path, json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_recommend_served_equals_the_engine(served, engine, histories):
    from recsys.online.catalog import Filters

    category = engine.catalog.rows[1]["category"]
    for item_ids in histories:
        for filters in (None, {"categories": [category]}):
            body = post(served, "/recommend", {"item_ids": item_ids, "k": 8, "timestamp": T0, "filters": filters})
            state = engine.user_state(None, item_ids, [], T0)
            local = engine.recommend(state, 8, Filters(**filters) if filters else None)
            assert body["ranker"] == local.ranker == "ctr"
            assert [i["item_id"] for i in body["items"]] == [engine.item(s.index)["item_id"] for s in local.items]
            np.testing.assert_allclose([i["score"] for i in body["items"]], [s.score for s in local.items], rtol=0, atol=1e-6)
            np.testing.assert_allclose([i["retrieval_score"] for i in body["items"]], [s.retrieval_score for s in local.items],
                                       rtol=0, atol=1e-5)


def test_rank_served_equals_the_engine(served, engine, histories):
    candidates = [engine.item(i)["item_id"] for i in (5, 6, 7, 40, 41)]
    for item_ids in histories:
        body = post(served, "/rank", {"item_ids": item_ids, "candidates": candidates, "timestamp": T0})
        local = engine.rank(engine.user_state(None, item_ids, [], T0), candidates)
        assert [i["item_id"] for i in body["items"]] == [engine.item(s.index)["item_id"] for s in local.items]
        np.testing.assert_allclose([i["score"] for i in body["items"]], [s.score for s in local.items], rtol=0, atol=1e-6)


def test_search_served_equals_the_engine(served, engine, histories):
    titles = [engine.catalog.rows[i]["title"] for i in (3, 17, 29)]
    for query in titles:
        for extra in ({"mode": "lexical"}, {"mode": "dense"}, {}, {"item_ids": histories[0]}):
            body = post(served, "/search", {"query": query, "k": 6, **extra})
            state = engine.user_state(None, extra["item_ids"], [], None) if "item_ids" in extra else None
            job = engine.search(query, 6, extra.get("mode"), state, None)
            assert body["mode"] == job.mode
            assert [i["item_id"] for i in body["items"]] == [engine.item(h.item)["item_id"] for h in job.results]
            np.testing.assert_allclose([i["score"] for i in body["items"]], [h.score for h in job.results], rtol=0, atol=1e-5)


def test_offline_evaluation_of_the_served_engine_equals_full_ranking(served, tiny_run):
    """Offline evaluation calls the same engine: with the exact (flat) index and the retrieval
    ranker, the served top-k gives the full-ranking HR/NDCG/MRR@k of the model itself."""
    from recsys.eval.evaluate import evaluate_model
    from recsys.eval.served import evaluate_engine
    from recsys.models import SeqRecModel
    from recsys.online.engine import EngineSpec, OnlineEngine

    assert served.current.manifest["kind"] == "flat"
    # Serving drops every history item; the S3-Rec protocol keeps a target the user saw before.
    # Both keep history items here, so the two protocols are the same and so must be the figures.
    serve = served.cfg.serve.model_copy(update={"ranker": "retrieval", "exclude_history": False})
    eval_cfg = served.cfg.eval.model_copy(update={"exclude_history": False})
    engine = OnlineEngine(served.current, EngineSpec.of(served.cfg).model_copy(update={"serve": serve}))
    split = tiny_run.dataset.read_split("test")
    online = evaluate_engine(engine, split, eval_cfg)
    offline = evaluate_model(SeqRecModel.from_pretrained(tiny_run.finetuned.model_path), split, eval_cfg)
    assert set(online) == {f"{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in eval_cfg.ks}
    for name, value in online.items():
        assert value == pytest.approx(offline[name], abs=1e-9), name
    assert online["hr@10"] > 0


def test_evaluate_stage_reports_the_served_path_of_its_model(served, tiny_run):
    from recsys import stages

    report = stages.evaluate(tiny_run.cfg, tiny_run.finetuned.model_path)
    assert report["protocol"]["served"].startswith("served: flat index " + served.current.version)
    assert set(report["metrics"]["served"]) >= {"hr@10", "ndcg@10"}
