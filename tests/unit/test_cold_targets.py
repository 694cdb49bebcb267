"""Cold targets of a time split (items the training period never saw) and their evaluation: the
first cold interaction per user and window, extended indices after [MASK], content-only scores,
and an id-only model that cannot rank them."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recsys.config import EvalConfig
from recsys.data.catalog import item_table, unique_catalog
from recsys.data.cold import cold_item_table, cold_targets
from recsys.data.dataset import PreparedDataset
from recsys.data.shaping import annotate_user_events, compact_events
from recsys.eval.segments import evaluate_segments, model_scorer, newest_popular_scorer, segment_rows

MIN = 60_000
CATALOG = pa.table({"item_id": ["a", "b", "c", "n1", "n2"], "title": ["A", "B", "C", "new one", "new two"],
                    "category": ["x", "x", "y", "y", "z"], "brand": pa.nulls(5, pa.string()), "price": pa.nulls(5, pa.float64()),
                    "attributes": pa.array([[]] * 5, pa.list_(pa.string()))})
VOCAB = pa.array(["a", "b", "c"])  # sold before the valid cut; n1, n2 launched after it
VALID_CUT, TEST_CUT = 100 * MIN, 200 * MIN


def annotated(rows):
    catalog, _ = unique_catalog(CATALOG)
    ids = catalog["item_id"].combine_chunks()
    to_vocab = np.array([1, 2, 3, 0, 0], np.int32)
    ev = pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "event_type": ["purchase"] * len(rows),
                   "timestamp": pa.array([r[2] * MIN for r in rows], pa.int64()), "query": pa.nulls(len(rows), pa.string()),
                   "session_id": pa.nulls(len(rows), pa.string())})
    return annotate_user_events(compact_events(ev, ids), 30 * MIN, ids, to_vocab)


def test_cold_items_get_indices_after_mask_and_known_attributes_only():
    catalog, _ = unique_catalog(CATALOG)
    _, attributes = item_table(catalog, VOCAB)  # attributes of the vocabulary: category:x, category:y
    cold = cold_item_table(catalog, VOCAB, attributes).to_pylist()
    assert [(r["item_id"], r["item_index"]) for r in cold] == [("n1", 5), ("n2", 6)]  # N=3: 0 pad, 1..3, 4 = [MASK]
    y = attributes.to_pydict()["attribute"].index("category:y") + 1
    assert cold[0]["attribute_indices"] == [y] and cold[1]["attribute_indices"] == []  # category:z was never learned


def test_first_cold_interaction_per_window_with_the_known_history_before_the_cut():
    block = annotated([
        ("u1", "a", 10), ("u1", "b", 20), ("u1", "n1", 150), ("u1", "n2", 160),  # valid: n1 (the first), not n2
        ("u1", "n2", 250), ("u1", "c", 210),  # test: n2, history a, b (+ c? no: c is after the test cut)
        ("u2", "n1", 50),  # a cold item before the cut is impossible by definition; no known history → no row
        ("u3", "c", 120), ("u3", "n2", 130), ("u3", "n2", 230),  # valid: no history before its cut → no row
    ])
    cold = cold_targets(block, ["purchase"], True, VALID_CUT, TEST_CUT, 50, pa.array(["n1", "n2"]), 3).to_pylist()
    rows = {(r["user_id"], r["split"]): r for r in cold}
    assert set(rows) == {("u1", "valid"), ("u1", "test"), ("u3", "test")}
    assert rows["u1", "valid"]["history"] == [1, 2] and rows["u1", "valid"]["target_id"] == "n1"
    assert rows["u1", "valid"]["target"] == 5
    assert rows["u1", "test"]["history"] == [1, 2] and rows["u1", "test"]["target"] == 6  # c (210) is after the test cut
    assert rows["u3", "test"]["history"] == [3]  # c at 120 is before the test cut


def prepared(tmp_path):
    """A 3-item time-split dataset with two cold items, written as the pipeline writes it."""
    root = tmp_path / "ds"
    (root / "valid").mkdir(parents=True)
    for part in ("test", "cold_targets", "events"):
        (root / part).mkdir()
    catalog, _ = unique_catalog(CATALOG)
    items, attributes = item_table(catalog, VOCAB)
    pq.write_table(items.append_column("train_count", pa.array([5, 1, 2], pa.int64())), root / "items.parquet")
    pq.write_table(attributes, root / "attributes.parquet")
    pq.write_table(cold_item_table(catalog, VOCAB, attributes), root / "cold_items.parquet")
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "history": pa.array([[1, 2], [3]], pa.list_(pa.int32())),
                             "target": pa.array([3, 1], pa.int32())}), root / "test" / "part.parquet")
    pq.write_table(pa.table({"user_id": ["u1"], "split": ["test"], "history": pa.array([[1, 2]], pa.list_(pa.int32())),
                             "target": pa.array([6], pa.int32()), "target_id": ["n2"], "timestamp": pa.array([250 * MIN])}),
                   root / "cold_targets" / "part.parquet")
    stamps = pa.array(np.array([10, 20, 150, 160, 170], np.int64) * MIN).cast(pa.timestamp("ms", tz="UTC"))
    pq.write_table(pa.table({"item_id": ["a", "b", "n2", "n2", "n1"], "event_type": ["purchase"] * 5, "timestamp": stamps}),
                   root / "events" / "part.parquet")
    (root / "manifest.json").write_text(json.dumps({
        "vocab": {"num_items": 3, "num_attributes": attributes.num_rows},
        "split": {"protocol": "time", "valid_cutoff_ms": VALID_CUT, "test_cutoff_ms": TEST_CUT}}))
    return PreparedDataset(root)


def model(attributes: bool, text_dim: int = 0):
    from recsys.models import SeqRecConfig, SeqRecModel

    torch.manual_seed(0)
    m = SeqRecModel(SeqRecConfig(num_items=3, num_attributes=2, max_attributes_per_item=2, hidden_size=8, num_heads=2,
                                 max_seq_len=4, attribute_embeddings=attributes, text_embedding_dim=text_dim)).eval()
    return m


def test_segments_score_cold_items_by_content_and_id_only_cannot(tmp_path):
    ds = prepared(tmp_path)
    cfg = EvalConfig(ks=[1, 2], exclude_history=False)
    rows = segment_rows(ds, "test", cfg)
    assert rows.target.tolist() == [3, 1, 6] and rows.masks["cold"].tolist() == [False, False, True]
    # bottom half of 3 items by train count = 1 item (b, count 1): u2's target a is not long tail, nor is c
    assert rows.masks["long_tail"].tolist() == [False, False, False]

    text = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    m = model(attributes=True, text_dim=5)
    scores = model_scorer(m, ds, text, 2)([[1, 2]])
    assert scores.shape == (1, 3 + 2 + 2)
    with torch.no_grad():
        u = m.user_vectors([[1, 2]])[0]
        n2 = m.items.content(torch.tensor([[0, 0]]), torch.from_numpy(text[1:2]))[0]  # no known attribute
    assert float(scores[0, 6]) == pytest.approx(float(u @ n2), abs=1e-6)  # exactly the content vector's score
    assert torch.equal(scores[0, :5], m.score_histories([[1, 2]])[0])  # the known part is the model's own scores

    id_only = model(attributes=False)
    assert not id_only.items.has_content
    segs = evaluate_segments(model_scorer(id_only, ds, None, 2), rows, cfg)
    assert segs["cold"]["rows"] == 1 and segs["cold"]["hr@2"] == 0.0  # -inf: it cannot rank what it never saw
    assert segs["known"]["rows"] == 2 and "hr@1" in segs["all"]
    # among the 2 new items alone the id-only model ties them (-inf each): a random order, HR@1 = 1/2
    assert segs["cold_among_new"]["rows"] == 1 and segs["cold_among_new"]["hr@1"] == pytest.approx(0.5)
    among = evaluate_segments(model_scorer(m, ds, text, 2), rows, cfg)["cold_among_new"]
    assert among["hr@1"] == float(scores[0, 6] > scores[0, 5])  # n2 (the target) against n1


def test_newest_popular_puts_the_new_arrivals_first_by_their_recent_sales(tmp_path):
    ds = prepared(tmp_path)
    # a (minute 10), b (20), n2 (150, 160), n1 (170); the test cut is minute 200
    score = newest_popular_scorer(ds, "test", ["purchase"], recent_days=1)(["h"])[0]
    assert score[6] > score[5] == score[2] == score[1] > score[3]  # all first sold in the window: by sales, c last
    window = (200 - 100) / (24 * 60)  # a window of the 100 minutes before the cut: n1 and n2 are new arrivals
    score = newest_popular_scorer(ds, "test", ["purchase"], recent_days=window)(["h"])[0]
    assert score[6] > score[5] > score[1] == score[2] == score[3] == 0  # a and b: sold before the window
    assert torch.isinf(score[0]) and torch.isinf(score[4])  # padding and [MASK]
    assert newest_popular_scorer(pd_loo(tmp_path), "test", ["purchase"], 1) is None


def pd_loo(tmp_path):
    root = tmp_path / "loo"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"vocab": {"num_items": 1}, "split": {"protocol": "leave_one_out"}}))
    return PreparedDataset(root)


def test_id_dropout_leaves_whole_items_out_in_training_only():
    from recsys.models import SeqRecConfig, SeqRecModel

    torch.manual_seed(0)
    m = SeqRecModel(SeqRecConfig(num_items=50, num_attributes=0, hidden_size=8, num_heads=2, max_seq_len=4,
                                 text_embedding_dim=3, id_dropout=0.5))
    ids = torch.arange(1, 52).repeat(2)  # every item and [MASK] twice
    content = m.items.content(m.items.item_attributes[ids], m.items.item_text[ids])
    m.train()
    m.items.draw_id_dropout()  # once per training step (SeqRecModel.forward with labels)
    dropped = (m.items(ids) == content).all(-1)
    assert 10 < int(dropped[:50].sum()) < 40 and torch.equal(dropped[:51], dropped[51:])  # per item, not per position
    assert torch.equal(dropped, (m.items(ids) == content).all(-1))  # input side, targets, negatives: the same step
    assert not dropped[50]  # [MASK] never loses its vector
    m(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[2, 3, 4]]))  # a training step draws a new mask
    assert not torch.equal(dropped, (m.items(ids) == content).all(-1))
    m.eval()
    assert not (m.items(ids) == content).all(-1).any()
    with pytest.raises(ValueError, match="id_dropout must be in"):
        SeqRecConfig(id_dropout=1.0)


def test_id_dropout_without_content_is_refused():
    from recsys.config import ModelConfig

    with pytest.raises(ValueError, match="id_dropout > 0 needs model.attribute_embeddings or model.text_features"):
        ModelConfig(id_dropout=0.3, attribute_embeddings=False, text_features=False)


def test_a_content_only_model_scores_a_new_product_exactly_like_a_trained_one():
    from recsys.config import ModelConfig
    from recsys.models import SeqRecConfig, SeqRecModel
    from recsys.online.cold_start import cold_vector

    torch.manual_seed(0)
    m = SeqRecModel(SeqRecConfig(num_items=6, num_attributes=0, hidden_size=8, num_heads=2, max_seq_len=4,
                                 text_embedding_dim=3, item_ids=False)).eval()
    text = torch.randn(8, 3)
    text[7] = 0.0  # [MASK] has no text
    m.set_item_text_embeddings(text)
    ids = torch.arange(1, 7)
    assert torch.allclose(m.items(ids), m.items.content(m.items.item_attributes[ids], m.items.item_text[ids]))
    assert torch.allclose(m.items(torch.tensor([3]))[0], torch.from_numpy(cold_vector(m.items, [], m.items.item_text[3].numpy())))
    assert torch.equal(m.items(torch.tensor([7]))[0], m.items.id_embedding.weight[7])  # [MASK] keeps its learned vector
    with pytest.raises(ValueError, match="item_ids: false needs"):
        ModelConfig(item_ids=False, attribute_embeddings=False, text_features=False)
    with pytest.raises(ValueError, match="item_ids=False or id_dropout > 0 needs item content"):
        SeqRecConfig(num_items=6, num_attributes=0, item_ids=False)  # attribute embeddings on, but no attributes


def test_search_indexes_the_served_catalog_and_text_vectors_the_cold_items_too(tmp_path):
    from recsys.data.text_vectors import catalog_texts as id_and_text
    from recsys.search.text_index import catalog_texts

    ds = prepared(tmp_path)
    assert catalog_texts(ds) == ["A x", "B x", "C y"]  # search: the N vocabulary items, row i-1 = index i
    ids, texts = id_and_text(ds)  # the recommender's text vectors: then the cold items (indices N + 2 ..)
    assert ids == ["a", "b", "c", "n1", "n2"] and texts[3:] == ["new one y", "new two z"]
