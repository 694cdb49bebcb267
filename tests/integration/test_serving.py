"""Ray Serve app on the tiny trained run: every endpoint, parity with the offline models,
real-time events, filters, explanations and cold start."""

import math

import numpy as np
import pytest
import requests
import torch

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000  # a fixed request time: hour and weekday of the ranking context


@pytest.fixture(scope="module")
def offline(served, tiny_run):
    """The models and catalog as evaluation loads them (not through serving code)."""
    from recsys.models import SeqRecForCTR, SeqRecModel
    from recsys.online.engine import context_of

    items = tiny_run.dataset.items()
    return {
        "model": SeqRecModel.from_pretrained(tiny_run.finetuned.model_path).eval(),
        "ctr": SeqRecForCTR.from_pretrained(served.ctr_path).eval(),
        "id_of": dict(zip(items["item_index"], items["item_id"], strict=True)),
        "index_of": dict(zip(items["item_id"], items["item_index"], strict=True)),
        "items": items,
        "context": context_of(T0, 0),
    }


def post(served, path, body, **kw):
    return requests.post(served.base + path, json=body, timeout=30, **kw)


def test_healthz_and_readyz_name_the_served_version(served):
    health = requests.get(served.base + "/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["version"] == served.current.version
    assert health["model_version"] == served.current.manifest["model_version"]
    ready = requests.get(served.base + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "version": served.current.version, "ranker": "ctr"}


def test_openapi_docs_list_every_endpoint(served):
    paths = requests.get(served.base + "/openapi.json", timeout=10).json()["paths"]
    assert {"/recommend", "/rank", "/events", "/items/{item_id}", "/healthz", "/readyz"} <= set(paths)
    assert requests.get(served.base + "/docs", timeout=10).status_code == 200


def test_recommend_equals_offline_retrieval_then_ctr_ranking(served, tiny_run, offline):
    """Parity: ANN top-`serve.candidates` by u·v (history excluded), re-ranked by the CTR model's
    click probability, equals the same computation with the offline models (atol 1e-5)."""
    model, ctr, id_of = offline["model"], offline["ctr"], offline["id_of"]
    n_candidates = served.cfg.serve.candidates
    for history in tiny_run.dataset.read_split("test").head(6)["history"]:
        history = [int(i) for i in history]
        answer = post(served, "/recommend", {"item_ids": [id_of[i] for i in history], "k": 10, "timestamp": T0})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["ranker"] == "ctr" and body["version"] == served.current.version
        scores = model.score_histories([history])[0]
        scores[torch.as_tensor(history)] = float("-inf")
        candidates = torch.topk(scores, n_candidates).indices
        probs = ctr.click_probability([history] * n_candidates, candidates, [offline["context"]] * n_candidates)
        order = torch.argsort(probs, descending=True, stable=True)[:10]
        assert [i["item_id"] for i in body["items"]] == [id_of[int(candidates[j])] for j in order]
        torch.testing.assert_close(torch.tensor([i["score"] for i in body["items"]]), probs[order], rtol=0, atol=1e-5)
        retrieval = torch.tensor([i["retrieval_score"] for i in body["items"]])
        torch.testing.assert_close(retrieval, scores[candidates[order]], rtol=0, atol=1e-4)


def test_rank_scores_given_candidates_like_the_offline_ctr_model(served, offline):
    id_of = offline["id_of"]
    history, candidates = [3, 9, 14, 2], [5, 6, 7, 40, 41]
    body = post(served, "/rank", {"item_ids": [id_of[i] for i in history], "candidates": [id_of[i] for i in candidates], "timestamp": T0}).json()
    probs = offline["ctr"].click_probability([history] * 5, candidates, [offline["context"]] * 5)
    expected = sorted(zip(candidates, probs.tolist(), strict=True), key=lambda p: -p[1])
    assert [i["item_id"] for i in body["items"]] == [id_of[c] for c, _ in expected]
    np.testing.assert_allclose([i["score"] for i in body["items"]], [p for _, p in expected], atol=1e-5)


def test_an_event_changes_the_very_next_recommendation(served, tiny_run, offline):
    user = str(tiny_run.dataset.read_split("test")["user_id"].iloc[3])
    before = post(served, "/recommend", {"user_id": user, "k": 10, "timestamp": T0}).json()
    clicked = before["items"][0]["item_id"]
    recorded = post(served, "/events", {"user_id": user, "item_id": clicked, "event": "click", "timestamp": T0})
    assert recorded.status_code == 200 and recorded.json()["recorded"] is True
    after = post(served, "/recommend", {"user_id": user, "k": 10, "timestamp": T0}).json()
    assert clicked not in [i["item_id"] for i in after["items"]]  # now history, so excluded
    # The new history is the logged sequence plus the click: retrieval scores say so.
    seqs = tiny_run.dataset.read_split("sequences").set_index("user_id")["items"]
    history = [int(i) for i in seqs[user]] + [offline["index_of"][clicked]]
    scores = offline["model"].score_histories([history])[0]
    served_ids = [offline["index_of"][i["item_id"]] for i in after["items"]]
    np.testing.assert_allclose([i["retrieval_score"] for i in after["items"]], scores[served_ids].numpy(), atol=1e-4)


def test_filters_apply_before_ranking(served, tiny_run, offline):
    items = offline["items"]
    category = items["category"].value_counts().index[0]
    user = str(tiny_run.dataset.read_split("test")["user_id"].iloc[1])
    body = post(served, "/recommend", {"user_id": user, "k": 5, "filters": {"categories": [category]}}).json()
    cats = dict(zip(items["item_id"], items["category"], strict=True))
    assert body["items"] and {cats[i["item_id"]] for i in body["items"]} == {category}
    lo, hi = items["price"].quantile([0.25, 0.5]).tolist()
    body = post(served, "/recommend", {"user_id": user, "k": 8, "filters": {"price_min": lo, "price_max": hi}}).json()
    assert len(body["items"]) == 8 and all(lo <= i["price"] <= hi for i in body["items"])
    cold = post(served, "/recommend", {"user_id": "never-seen", "k": 4, "filters": {"categories": [category]}}).json()
    assert cold["cold_start"] and {cats[i["item_id"]] for i in cold["items"]} == {category}


def test_brands_filter_applies_to_recommend(served, tiny_run, offline):
    """The brands filter reached /search but was dropped by /recommend (Filters built by position)."""
    items = offline["items"]
    brands = dict(zip(items["item_id"], items["brand"], strict=True))
    top = items["brand"].value_counts().index[:2].tolist()
    user = str(tiny_run.dataset.read_split("test")["user_id"].iloc[1])
    unfiltered = post(served, "/recommend", {"user_id": user, "k": 20}).json()
    assert {brands[i["item_id"]] for i in unfiltered["items"]} - set(top), "the test needs other brands in the unfiltered answer"
    for body in ({"user_id": user, "k": 5, "filters": {"brands": top}}, {"user_id": "never-seen", "k": 5, "filters": {"brands": top}}):
        answer = post(served, "/recommend", body).json()
        assert answer["items"] and {brands[i["item_id"]] for i in answer["items"]} <= set(top), answer


def test_exclude_purchased_removes_logged_and_live_purchases(served, tiny_run, offline):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    events = pq.read_table(tiny_run.dataset.path / "events", columns=["user_id", "item_id", "event_type"])
    buys = events.filter(pc.equal(events["event_type"], "purchase"))
    user = buys["user_id"][0].as_py()
    bought = {i for u, i in zip(buys["user_id"].to_pylist(), buys["item_id"].to_pylist(), strict=True) if u == user}
    live = next(i for i in offline["items"]["item_id"] if i not in bought)
    post(served, "/events", {"user_id": user, "item_id": live, "event": "purchase"})
    body = post(served, "/recommend", {"user_id": user, "k": 50, "filters": {"exclude_purchased": True}}).json()
    assert not ({i["item_id"] for i in body["items"]} & (bought | {live}))


def test_explanations_are_the_models_own_arithmetic(served, offline):
    """Attribute shares (plus the id part) sum to u·v exactly; each history effect is the CTR
    logit with that item minus the logit without it, as /rank confirms."""
    id_of = offline["id_of"]
    history = [3, 9, 14, 2, 21]
    body = post(served, "/recommend", {"item_ids": [id_of[i] for i in history], "k": 3, "explain": True, "timestamp": T0}).json()
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    for item in body["items"]:
        why = item["explanation"]
        assert why["score_explained"] == "ctr_logit" and why["history"] and len(why["attributes"]) >= 2
        assert math.isclose(sum(a["contribution"] for a in why["attributes"]), item["retrieval_score"], abs_tol=1e-3)
        top = why["history"][0]
        without = [id_of[i] for i in history if id_of[i] != top["item_id"]]
        again = post(served, "/rank", {"item_ids": without, "candidates": [item["item_id"]], "timestamp": T0}).json()
        assert math.isclose(logit(item["score"]) - logit(again["items"][0]["score"]), top["effect"], abs_tol=1e-3)


def test_items_endpoint_and_unknown_item(served, offline):
    item_id = offline["items"]["item_id"].iloc[0]
    body = requests.get(f"{served.base}/items/{item_id}", timeout=10).json()
    assert body["item_id"] == item_id and body["title"] and isinstance(body["attributes"], list)
    missing = requests.get(f"{served.base}/items/no-such-item", timeout=10)
    assert missing.status_code == 404 and missing.json()["detail"][0]["field"] == "item_id"


def test_forecast_is_the_offline_models_own_prediction(served, tiny_run):
    """GET /forecast/{item} answers the published forecast, and that is what the offline neural
    model predicts when run again on the same history and item vectors."""
    import pandas as pd

    from recsys.artifacts import ArtifactStore
    from recsys.forecast.neural import ForecastArrays, QuantileForecastNet, predict_arrays
    from recsys.forecast.stage import final_problem, item_vectors, load_sales

    cfg = tiny_run.cfg
    release = ArtifactStore.of(cfg).latest("forecast")
    series, static = load_sales(cfg, tiny_run.dataset)
    problem = final_problem(cfg, series, static, list(series.frame["unique_id"].unique()))
    arrays = ForecastArrays.of(problem, cfg.forecast.max_horizon, item_vectors(cfg, tiny_run.dataset))
    offline = predict_arrays(QuantileForecastNet.load(release.manifest["forecaster_path"]), arrays,
                             cfg.forecast.max_horizon, problem.origin)
    top = series.frame.groupby("unique_id")["y"].sum().idxmax()
    body = requests.get(f"{served.base}/forecast/{top}", params={"horizon": 3}, timeout=10).json()
    assert body["version"] == release.version and body["model"] == "neural" and len(body["weeks"]) == 3
    mine = offline[offline["unique_id"] == top].head(3)
    for week, (_, row) in zip(body["weeks"], mine.iterrows(), strict=True):
        assert week["week"] == str(pd.Timestamp(row["ds"]).date())
        assert week["p10"] <= week["p50"] <= week["p90"]
        # finalise: P10 down and P90 up to whole units (recsys/forecast/models.py)
        assert week["p50"] == pytest.approx(max(row["p50"], 0.0), rel=1e-5, abs=1e-6)
        assert week["p10"] == np.floor(max(row["p10"], 0.0) + 1e-9) and week["p90"] == np.ceil(row["p90"] - 1e-9)
    advice = body["replenishment"]
    assert advice["order_up_to"] >= advice["reorder_point"] >= 0 and advice["lead_time_weeks"] == 1


@pytest.mark.parametrize(("path", "status", "field"), [
    ("/forecast/no-such-product", 404, "item_id"),
    ("/forecast/{item}?horizon=0", 422, "horizon"),
    ("/forecast/{item}?horizon=99", 422, "horizon"),
    ("/forecast/{item}?horizon=two", 422, "horizon"),
])
def test_forecast_bad_input_names_the_field(served, tiny_run, path, status, field):
    item = tiny_run.dataset.items()["item_id"].iloc[0]
    answer = requests.get(served.base + path.format(item=item), timeout=10)
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"][0]["field"] == field


def test_unknown_user_gets_popular_items_marked_cold_start(served, tiny_run):
    body = post(served, "/recommend", {"user_id": "nobody-we-know", "k": 3}).json()
    assert body["cold_start"] is True and body["ranker"] == "popularity"
    items = tiny_run.dataset.items().sort_values("train_count", ascending=False, kind="stable")
    assert [i["item_id"] for i in body["items"]] == items["item_id"].head(3).tolist()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u", "k": "many"}, "k"),
        ({"user_id": "u", "k": 0}, "k"),
        ({"user_id": "u", "k": -3}, "k"),
        ({"user_id": "u", "k": 51}, "k"),  # above serve.max_k
        ({"user_id": "u", "k": 10**30}, "k"),
        ({}, "body"),
        ({"item_ids": []}, "body"),
        ({"item_ids": ["no-such-item"]}, "item_ids"),
        ({"item_ids": "sku-000001"}, "item_ids"),
        ({"user_id": "u", "colour": "red"}, "colour"),
        ({"user_id": "u", "filters": {"price_min": 5, "price_max": 1}}, "filters"),
        ({"user_id": "u", "filters": {"categories": []}}, "filters.categories"),
        ([1, 2, 3], "body"),
    ],
)
def test_malformed_requests_get_4xx_json_naming_the_field(served, body, field):
    answer = post(served, "/recommend", body)
    assert answer.status_code == 422, answer.text
    detail = answer.json()
    assert detail["error"] == "invalid_request"
    assert field in [d["field"] for d in detail["detail"]], detail


def test_nan_price_is_refused_by_name(served):
    answer = requests.post(served.base + "/recommend", data='{"user_id": "u", "filters": {"price_min": NaN}}',
                           headers={"content-type": "application/json"}, timeout=10)
    assert answer.status_code == 422 and answer.json()["detail"][0]["field"] == "filters.price_min"


def test_events_validate_item_and_type(served):
    bad_type = post(served, "/events", {"user_id": "u", "item_id": "x", "event": "like"})
    assert bad_type.status_code == 422 and bad_type.json()["detail"][0]["field"] == "event"
    unknown = post(served, "/events", {"user_id": "u", "item_id": "no-such-item", "event": "click"})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["field"] == "item_id"
