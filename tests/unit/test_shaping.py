"""Dedup, sessions, sequences, both split protocols and the CTR/search examples on hand-made events."""

import numpy as np
import pyarrow as pa

from recsys.data.examples import ctr_examples, search_pairs
from recsys.data.shaping import annotate_user_events, build_sequences, compact_events
from recsys.data.splits import leave_one_out, time_cut

VOCAB = pa.array(["a", "b", "c", "d"])  # indices 1..4
MIN = 60_000
KINDS = ["click", "add_to_cart", "purchase"]


def events(rows):
    """rows: (user, item, type, minute, query)."""
    return pa.table({
        "user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "event_type": [r[2] for r in rows],
        "timestamp": pa.array([r[3] * MIN for r in rows], pa.int64()), "query": [r[4] if len(r) > 4 else None for r in rows],
        "session_id": pa.nulls(len(rows), pa.string()),
    })


def annotate(rows, gap_minutes=30, to_vocab=None):
    return annotate_user_events(compact_events(events(rows), VOCAB), gap_minutes * MIN, VOCAB, to_vocab)


def test_duplicates_marked_and_sessions_split_by_inactivity():
    out = annotate([
        ("u1", "a", "click", 0), ("u1", "a", "click", 0),  # exact duplicate
        ("u1", "b", "click", 10), ("u1", "c", "click", 50),  # 40 min gap → new session
        ("u2", "a", "click", 0), ("u2", "z", "click", 1),  # unknown to the vocabulary: item null
    ])
    assert out["duplicate"].to_pylist() == [False, True, False, False, False, False]
    assert out["session"].to_pylist() == [0, 0, 0, 1, 0, 0]
    assert out["item"].to_pylist() == [1, 1, 2, 3, 1, None]
    # A vocabulary smaller than the catalog (the time split's): b → 1, the rest unknown.
    smaller = annotate([("u1", "a", "click", 0), ("u1", "b", "click", 1)], to_vocab=np.array([0, 1, 0, 0], np.int32))
    assert smaller["item"].to_pylist() == [None, 1] and smaller["item_id"].to_pylist() == ["a", "b"]


def test_sequences_are_time_ordered_deduplicated_and_collapsed():
    rows = [("u1", "b", "click", 5), ("u1", "a", "click", 1), ("u1", "a", "click", 1),
            ("u1", "b", "add_to_cart", 6), ("u1", "c", "impression", 7), ("u1", "c", "purchase", 90)]
    seqs = build_sequences(annotate(rows), KINDS, collapse_repeats=True).to_pylist()
    assert seqs == [{"user_id": "u1", "items": [1, 2, 3], "timestamps": [1 * MIN, 5 * MIN, 90 * MIN], "sessions": [0, 0, 1]}]
    raw = build_sequences(annotate(rows), KINDS, collapse_repeats=False).to_pylist()[0]
    assert raw["items"] == [1, 2, 2, 3]


def test_leave_one_out_keeps_targets_out_of_training():
    seqs = pa.table({"user_id": ["u1", "short"], "items": pa.array([[1, 2, 3, 4, 1], [1, 2]], pa.list_(pa.int32()))})
    train = leave_one_out(seqs, "train", min_len=3, max_len=2).to_pylist()
    valid = leave_one_out(seqs, "valid", min_len=3, max_len=10).to_pylist()
    test = leave_one_out(seqs, "test", min_len=3, max_len=10).to_pylist()
    assert train == [{"user_id": "u1", "items": [1, 2, 3]}]  # items[:-2], the most recent max_len + 1
    assert valid == [{"user_id": "u1", "history": [1, 2, 3], "target": 4}]
    assert test == [{"user_id": "u1", "history": [1, 2, 3, 4], "target": 1}]


def test_time_split_uses_only_events_before_each_cut():
    seqs = pa.table({
        "user_id": ["u1", "u2"],
        "items": pa.array([[1, 2, 3, 4], [2, 3, 1]], pa.list_(pa.int32())),
        "timestamps": pa.array([[10, 20, 30, 40], [5, 36, 45]], pa.list_(pa.int64())),
    })
    kw = {"valid_cut": 25, "test_cut": 35, "max_len": 10}
    assert time_cut(seqs, "train", **{**kw, "max_len": 1}).to_pylist() == [{"user_id": "u1", "items": [1, 2]}]
    assert time_cut(seqs, "train", **kw).to_pylist() == [{"user_id": "u1", "items": [1, 2]}]
    assert time_cut(seqs, "valid", **kw).to_pylist() == [{"user_id": "u1", "history": [1, 2], "target": 3}]
    assert time_cut(seqs, "test", **kw).to_pylist() == [
        {"user_id": "u1", "history": [1, 2, 3], "target": 4}, {"user_id": "u2", "history": [2], "target": 3}]


def test_ctr_labels_history_prefix_and_split():
    rows = [
        ("u1", "a", "click", 0), ("u1", "b", "click", 2),
        ("u1", "c", "impression", 3), ("u1", "d", "impression", 3), ("u1", "d", "click", 4),  # d clicked, c not
        ("u1", "a", "impression", 100), ("u1", "a", "click", 101),  # new session; the valid target
        ("u1", "b", "impression", 200), ("u1", "b", "click", 201),  # the test target
    ]
    out = ctr_examples(annotate(rows), KINDS, True, "leave_one_out", 3, 0, 0).to_pylist()
    got = [(r["candidate"], r["label"], r["history_len"], r["session_position"], r["split"]) for r in out]
    assert got == [(3, 0, 2, 0, "train"), (4, 1, 2, 1, "train"), (1, 1, 3, 0, "valid"), (2, 1, 4, 0, "test")]


def test_search_pairs_take_the_next_click_in_the_session():
    rows = [
        ("u1", None, "search", 0, "red lipstick"), ("u1", "c", "impression", 1), ("u1", "c", "click", 2),
        ("u1", "c", "purchase", 3),
        ("u1", None, "search", 10, "no click after me"),
        ("u1", "a", "click", 60),  # next session: not the answer to the search above
        ("u1", "b", "click", 61),
    ]
    out = search_pairs(annotate(rows), KINDS, True, "leave_one_out", 3, 0, 0).to_pylist()
    assert [(r["query"], r["item"], r["purchased"], r["history_len"], r["split"]) for r in out] == [
        ("red lipstick", 3, True, 0, "train")]


def test_examples_are_empty_without_impressions_or_searches():
    out = annotate([("u1", "a", "purchase", 0), ("u1", "b", "purchase", 1), ("u1", "c", "purchase", 2)])
    assert ctr_examples(out, KINDS, True, "leave_one_out", 3, 0, 0).num_rows == 0
    assert search_pairs(out, KINDS, True, "leave_one_out", 3, 0, 0).num_rows == 0
    assert np.array_equal(build_sequences(out, KINDS, True)["items"].to_pylist()[0], [1, 2, 3])
