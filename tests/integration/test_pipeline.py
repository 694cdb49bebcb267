"""The Ray Data pipeline against an independent pandas computation of the same sequences."""

import pandas as pd
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration


def expected_sequences(source_dir, kinds) -> dict[str, list[str]]:
    events = pq.read_table(source_dir / "events").to_pandas()
    events = events[events["event_type"].isin(kinds)].sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    out = {}
    for user, rows in events.groupby("user_id"):
        items = rows["item_id"].tolist()
        out[user] = [x for i, x in enumerate(items) if i == 0 or x != items[i - 1]]  # collapse repeats
    return out


def test_sequences_and_leave_one_out_splits(tiny_run):
    ds, cfg = tiny_run.dataset, tiny_run.cfg
    m = ds.manifest
    source = ds.path.parents[2] / "sources" / m["name"] / m["source"]["fingerprint"]
    expected = expected_sequences(source, cfg.data.interaction_events)

    items = ds.items()
    id_of = dict(zip(items["item_index"], items["item_id"], strict=True))
    seqs = ds.read_split("sequences")
    got = {u: [id_of[i] for i in s] for u, s in zip(seqs["user_id"], seqs["items"], strict=True)}
    assert got == expected
    assert m["counts"]["users"] == len(expected)
    # Impressions and searches are valid events, kept in events/, but not sequence steps.
    assert m["counts"]["events_valid"] == m["counts"]["events_read"] > sum(len(s) for s in expected.values())

    train, valid, test = (ds.read_split(s).set_index("user_id") for s in ("train", "valid", "test"))
    assert len(train) == len(valid) == len(test) == m["counts"]["test_rows"]
    n = cfg.data.max_seq_len  # the most recent n items are kept
    for user, row in test.iterrows():
        full = [int(x) for x in seqs.set_index("user_id").loc[user, "items"]]
        assert int(row["target"]) == full[-1] and list(row["history"]) == full[:-1][-n:]
        assert int(valid.loc[user, "target"]) == full[-2] and list(valid.loc[user, "history"]) == full[:-2][-n:]
        # Leak-free: training sees neither evaluation target at its position.
        assert list(train.loc[user, "items"]) == full[:-2][-(n + 1):]


def test_popularity_counts_only_training_histories(tiny_run):
    ds = tiny_run.dataset
    train = ds.read_split("train")
    counts = pd.Series([i for s in train["items"] for i in s]).value_counts()
    items = ds.items().set_index("item_index")
    for index, n in counts.items():
        assert items.loc[index, "train_count"] == n
    assert items["train_count"].sum() == counts.sum()


def test_prepare_is_idempotent(tiny_run):
    from recsys import stages

    again = stages.prepare(tiny_run.cfg)
    assert again.path == tiny_run.dataset.path
