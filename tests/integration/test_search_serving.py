"""POST /search and POST /items on the tiny trained run (text index built by the index stage from
the search stage's fine-tuned encoder): parity with the offline search engine, filters, signals,
malformed queries, and cold-start items found by search and recommendation without retraining."""

import json

import numpy as np
import pandas as pd
import pytest
import requests
import torch

pytestmark = pytest.mark.integration


def post(served, path, body):
    return requests.post(served.base + path, json=body, timeout=30)


@pytest.fixture(scope="module")
def offline_search(served, tiny_run):
    """The published text index and encoder, loaded as offline evaluation loads them."""
    from recsys.models import SeqRecModel
    from recsys.search.encoder import TextEncoder
    from recsys.search.engine import SearchIndex, SearchWeights
    from recsys.search.text_index import catalog_texts, load_text_index

    meta = served.current.manifest["search"]
    index, vectors = load_text_index(served.current.path, meta, served.cfg.index)
    engine = SearchIndex(catalog_texts(tiny_run.dataset), vectors, TextEncoder(meta["encoder_path"]), SearchWeights.of(served.cfg.search), index)
    items = tiny_run.dataset.items()
    return {
        "engine": engine,
        "model": SeqRecModel.from_pretrained(tiny_run.finetuned.model_path).eval(),
        "items": items,
        "id_of": dict(zip(items["item_index"], items["item_id"], strict=True)),
        "row": {r["item_id"]: r for r in items.to_dict("records")},
    }


def test_index_stage_published_the_fine_tuned_text_index(served, tiny_run):
    meta = served.current.manifest["search"]
    assert meta["encoder"] == "fine-tuned" and meta["items"] == tiny_run.dataset.num_items and meta["dim"] == 384
    assert meta["recall_at_100"] >= served.cfg.index.min_recall_at_100 and "held-out searches" in meta["recall_queries"]
    assert (served.current.path / "text" / "vectors.npy").is_file()


def test_search_equals_the_offline_engine_and_names_its_signals(served, offline_search):
    engine, items = offline_search["engine"], offline_search["items"]
    title = items.dropna(subset=["title"])["title"].iloc[3]
    query = " ".join(title.lower().split()[-2:])
    body = post(served, "/search", {"query": query, "k": 8}).json()
    assert body["mode"] == "hybrid" and body["version"] == served.current.version and len(body["items"]) == 8
    q = engine.encode_queries([query])[0]
    expected = engine.rank(query, q, 8, "hybrid")
    assert [i["item_id"] for i in body["items"]] == [offline_search["id_of"][h.item] for h in expected]
    np.testing.assert_allclose([i["score"] for i in body["items"]], [h.score for h in expected], atol=1e-5)
    top = body["items"][0]
    assert top["signals"]["lexical_terms"] and set(top["signals"]["lexical_terms"]) <= set(query.split())
    assert top["score"] == pytest.approx(0.6 * top["signals"]["semantic"] + 0.4 * top["signals"]["lexical"], abs=1e-5)


def test_personalised_search_blends_the_users_affinity(served, tiny_run, offline_search):
    seqs = tiny_run.dataset.read_split("sequences")
    user, history = str(seqs["user_id"].iloc[5]), [int(i) for i in seqs["items"].iloc[5]]
    query = "cream"
    body = post(served, "/search", {"query": query, "user_id": user, "k": 10}).json()
    assert body["mode"] == "hybrid_personal" and all(i["signals"]["personal"] is not None for i in body["items"])
    engine, model = offline_search["engine"], offline_search["model"]
    with torch.no_grad():
        u = model.user_vectors([history])[0].numpy()
        table = model.item_vectors().numpy()
    expected = engine.rank(query, engine.encode_queries([query])[0], 10, "hybrid_personal", lambda c: table[c - 1] @ u)
    assert [i["item_id"] for i in body["items"]] == [offline_search["id_of"][h.item] for h in expected]
    np.testing.assert_allclose([i["signals"]["personal"] for i in body["items"]], [h.personal for h in expected], atol=1e-4)
    # An unknown user cannot personalise: the answer says it ranked by relevance alone.
    assert post(served, "/search", {"query": query, "user_id": "never-seen"}).json()["mode"] == "hybrid"


def test_search_filters_apply_before_ranking(served, offline_search):
    items, row = offline_search["items"], offline_search["row"]
    category, brand = items["category"].value_counts().index[0], items["brand"].value_counts().index[0]
    body = post(served, "/search", {"query": "gentle cream", "k": 20, "filters": {"categories": [category]}}).json()
    assert body["items"] and {row[i["item_id"]]["category"] for i in body["items"]} == {category}
    body = post(served, "/search", {"query": "gentle cream", "k": 20, "filters": {"brands": [brand]}}).json()
    assert body["items"] and {row[i["item_id"]]["brand"] for i in body["items"]} == {brand}
    lo, hi = items["price"].quantile([0.25, 0.5]).tolist()
    body = post(served, "/search", {"query": "gentle cream", "k": 20, "filters": {"price_min": lo, "price_max": hi}}).json()
    assert body["items"] and all(lo <= i["price"] <= hi for i in body["items"])
    nothing = post(served, "/search", {"query": "cream", "filters": {"categories": ["no-such-category"]}})
    assert nothing.status_code == 200 and nothing.json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"query": ""}, "query", "at least 1 character"),
        ({"query": "   "}, "query", "query is empty"),
        ({"query": "?!* ... ---"}, "query", "no words"),
        ({"query": "lip " * 100}, "query", "at most 256"),
        ({"query": "red\u0007lipstick"}, "query", "control characters"),
        ({"query": " ".join(f"w{i}" for i in range(40))}, "query", "at most 32"),
        ({"query": "a" * 100}, "query", "words are at most 64"),
        ({"query": "cream", "k": 0}, "k", "greater than or equal to 1"),
        ({"query": "cream", "k": 5000}, "k", "serve.max_k"),
        ({"query": "cream", "mode": "magic"}, "mode", "hybrid_personal"),
        ({"query": "cream", "mode": "hybrid_personal"}, "mode", "needs user_id or item_ids"),
        ({"query": "cream", "filters": {"price_min": 5, "price_max": 1}}, "filters", "price_min"),
        ({"query": "cream", "colour": "red"}, "colour", "Extra inputs"),
        ({"query": "cream", "item_ids": ["no-such-item"]}, "item_ids", "unknown item ids"),
        ({"query": 42}, "query", "valid string"),
        ({"query": "cream \ud800"}, "query", "unable to parse raw data as a unicode string"),  # a lone surrogate
    ],
)
def test_malformed_queries_get_422_naming_the_field(served, body, field, words):
    r = post(served, "/search", body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(d["field"] == field and words in d["message"] for d in detail), detail


@pytest.mark.mutates_catalog
def test_new_item_is_found_by_title_and_recommended_without_retraining(served, tiny_run, offline_search):
    """Cold start through POST /items (runs last: it adds to the served catalog)."""
    items, model = offline_search["items"], offline_search["model"]
    donor = items.iloc[7]
    new = {"item_id": "new-zephyr-1", "title": "Zephyrwood Bamboo Toothbrush", "category": "oral-care-new", "brand": "zephyrwood",
           "price": 4.5, "attributes": [*list(donor["attributes"]), "material:never-seen"]}
    r = post(served, "/items", new)
    assert r.status_code == 201, r.text
    assert r.json()["searchable"] and r.json()["recommendable"]
    assert r.json()["unknown_attributes"] == ["category:oral-care-new", "brand:zephyrwood", "material:never-seen"]
    assert r.json()["known_attributes"] == list(donor["attributes"])
    # Found by its title, straight away, by words and by meaning.
    for query in ("zephyrwood toothbrush", "bamboo tooth brush"):
        hits = post(served, "/search", {"query": query, "k": 3}).json()["items"]
        assert hits[0]["item_id"] == "new-zephyr-1", (query, hits)
    assert post(served, "/search", {"query": "toothbrush", "filters": {"brands": ["zephyrwood"]}}).json()["items"][0]["item_id"] == "new-zephyr-1"
    # Recommended from its attributes: v = mean of its known attribute vectors, u·v as retrieval score.
    seqs = tiny_run.dataset.read_split("sequences")
    user, history = str(seqs["user_id"].iloc[2]), [int(i) for i in seqs["items"].iloc[2]]
    rec = post(served, "/recommend", {"user_id": user, "k": 3, "filters": {"categories": ["oral-care-new"]}}).json()
    assert [i["item_id"] for i in rec["items"]] == ["new-zephyr-1"]
    with torch.no_grad():
        u = model.user_vectors([history])[0]
        vocab = pd.read_parquet(tiny_run.dataset.path / "attributes.parquet").set_index("attribute")["attribute_index"]
        v = model.items.attribute_embedding.weight[torch.as_tensor([int(vocab[a]) for a in donor["attributes"]])].mean(0)
    assert rec["items"][0]["retrieval_score"] == pytest.approx(float(u @ v), abs=1e-4)
    assert requests.get(f"{served.base}/items/new-zephyr-1", timeout=10).json()["train_count"] == 0
    # Durable, and never added twice.
    log = tiny_run.cfg.artifacts_root / "serving" / tiny_run.cfg.run_name / "new_items.jsonl"
    assert json.loads(log.read_text().splitlines()[-1])["item_id"] == "new-zephyr-1"
    again = post(served, "/items", new)
    assert again.status_code == 409 and again.json()["detail"][0]["field"] == "item_id"
    broken = requests.post(served.base + "/items", data=b'{"item_id": "x-0", "title": "bad \\ud800 text"}', headers={"content-type": "application/json"}, timeout=30)
    assert broken.status_code == 422 and broken.json()["detail"][0]["field"] == "title"  # a lone surrogate never reaches the tokenizer
    blank = post(served, "/items", {"item_id": "x-1"})
    assert blank.status_code == 422 and "title, category, brand or attributes" in blank.json()["detail"][0]["message"]
    unknown_only = post(served, "/items", {"item_id": "x-2", "title": "Mystery Gadget", "attributes": ["kind:unheard-of"]}).json()
    assert unknown_only["searchable"] and not unknown_only["recommendable"]
