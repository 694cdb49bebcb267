"""Ray Serve: live HTTP against the tiny trained model."""

import pytest
import requests
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoint(tiny_run):
    from ray import serve

    from serving.app import build_app

    cfg = tiny_run.cfg
    serve.start(http_options={"host": "127.0.0.1", "port": cfg.serve.port})
    serve.run(build_app({"config": str(tiny_run.config_path)}), name="recommender", route_prefix="/")
    base = f"http://127.0.0.1:{cfg.serve.port}"
    assert requests.get(base + "/healthz", timeout=30).status_code == 200
    yield base
    serve.shutdown()


def test_healthz_reports_the_served_model(endpoint, tiny_run):
    body = requests.get(endpoint + "/healthz", timeout=10).json()
    assert body == {"status": "ok", "model_version": tiny_run.finetuned.model_path.name, "items": tiny_run.dataset.num_items}


def test_recommend_scores_equal_the_evaluation_models(endpoint, tiny_run):
    """Parity: same history → same top-k and scores as the model evaluation loads (atol 1e-5:
    float32 scores pass through JSON as float64 decimals, nothing else differs)."""
    from recsys.models import SeqRecModel

    model = SeqRecModel.from_pretrained(tiny_run.finetuned.model_path).eval()
    items = tiny_run.dataset.items()
    id_of = dict(zip(items["item_index"], items["item_id"], strict=True))
    test = tiny_run.dataset.read_split("test").head(8)
    for history in test["history"]:
        history = [int(i) for i in history]
        answer = requests.post(endpoint + "/recommend", json={"item_ids": [id_of[i] for i in history], "k": 10}, timeout=10)
        assert answer.status_code == 200, answer.text
        served = answer.json()["items"]
        scores = model.score_histories([history])[0]
        scores[torch.as_tensor(history)] = float("-inf")  # serve.exclude_history, as eval.exclude_history
        top = torch.topk(scores, 10)
        assert [s["item_id"] for s in served] == [id_of[int(i)] for i in top.indices]
        torch.testing.assert_close(torch.tensor([s["score"] for s in served]), top.values, rtol=0, atol=1e-5)
        assert not {s["item_id"] for s in served} & {id_of[i] for i in history}


def test_known_user_gets_personal_items_with_catalog_fields(endpoint, tiny_run):
    user = tiny_run.dataset.read_split("test")["user_id"].iloc[0]
    body = requests.post(endpoint + "/recommend", json={"user_id": user, "k": 5}, timeout=10).json()
    assert body["cold_start"] is False and body["user_id"] == user and len(body["items"]) == 5
    first = body["items"][0]
    assert first["title"] and first["category"] and first["brand"] and first["price"] > 0
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_unknown_user_gets_popular_items_marked_cold_start(endpoint, tiny_run):
    answer = requests.post(endpoint + "/recommend", json={"user_id": "nobody-we-know", "k": 3}, timeout=10)
    assert answer.status_code == 200
    body = answer.json()
    assert body["cold_start"] is True
    items = tiny_run.dataset.items().sort_values("train_count", ascending=False, kind="stable")
    assert [i["item_id"] for i in body["items"]] == items["item_id"].head(3).tolist()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u", "k": "many"}, "k"),
        ({"user_id": "u", "k": 0}, "k"),
        ({"user_id": "u", "k": 51}, "k"),  # above serve.max_k
        ({}, "body"),
        ({"item_ids": []}, "body"),
        ({"item_ids": ["no-such-item"]}, "item_ids"),
        ({"item_ids": "sku-000001"}, "item_ids"),
        ({"user_id": "u", "colour": "red"}, "colour"),
        ([1, 2, 3], "body"),
    ],
)
def test_malformed_requests_get_4xx_json_naming_the_field(endpoint, body, field):
    answer = requests.post(endpoint + "/recommend", json=body, timeout=10)
    assert answer.status_code == 422, answer.text
    detail = answer.json()
    assert detail["error"] == "invalid_request"
    assert field in [d["field"] for d in detail["detail"]], detail


def test_invalid_json_is_a_4xx_not_a_500(endpoint):
    answer = requests.post(endpoint + "/recommend", data="{not json", headers={"content-type": "application/json"}, timeout=10)
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_request"
