"""Pooled pretraining over several shops: each shop's training period only, ids namespaced by shop,
and the pooled model's weights carried into one shop's model by item id."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recsys.artifacts import Dataset
from recsys.config import ConfigError, load_config
from recsys.data.pooled import pool_logs, pooled_config
from recsys.data.schema import EVENTS_SCHEMA
from recsys.train.transfer import transfer_weights

CUT = 1_000_000


def shop(tmp_path, name, items, events, attributes=()):
    """A prepared time-split dataset with `items` (ids, titles) and `events` (user, item, ms)."""
    root = tmp_path / name
    (root / "events").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({
        "name": name, "vocab": {"num_items": len(items), "num_attributes": len(attributes)},
        "split": {"protocol": "time", "valid_cutoff_ms": CUT, "test_cutoff_ms": 2 * CUT}}))
    pq.write_table(pa.table({
        "item_id": [i for i, _ in items], "title": [t for _, t in items], "category": pa.nulls(len(items), pa.string()),
        "brand": pa.nulls(len(items), pa.string()), "price": pa.nulls(len(items), pa.float64()),
        "attributes": pa.array([[]] * len(items), pa.list_(pa.string())),
        "item_index": pa.array(range(1, len(items) + 1), pa.int32())}), root / "items.parquet")
    pq.write_table(pa.table({"attribute_index": pa.array(range(1, len(attributes) + 1), pa.int32()),
                             "attribute": list(attributes)}), root / "attributes.parquet")
    stamps = pa.array([t for *_, t in events], pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    pq.write_table(pa.table({"user_id": [u for u, *_ in events], "item_id": [i for _, i, _ in events],
                             "event_type": ["purchase"] * len(events), "timestamp": stamps,
                             "query": pa.nulls(len(events), pa.string()), "session_id": pa.nulls(len(events), pa.string())},
                            schema=EVENTS_SCHEMA), root / "events" / "part.parquet")
    return Dataset(root)


def test_pooled_logs_hold_each_shops_training_period_with_namespaced_ids(tmp_path):
    a = shop(tmp_path, "gifts", [("g1", "heart lantern"), ("g2", "tea set")],
             [("u1", "g1", 10), ("u1", "g2", 20), ("u1", "g2", CUT + 5)])  # the last is after gifts' cut
    b = shop(tmp_path, "films", [("f1", "Toy Story")], [("u1", "f1", 30)])
    events, catalog = pool_logs([a, b], tmp_path / "pool")
    ev = pq.read_table(events).to_pydict()
    assert sorted(zip(ev["user_id"], ev["item_id"], strict=True)) == [
        ("films/u1", "films/f1"), ("gifts/u1", "gifts/g1"), ("gifts/u1", "gifts/g2")]  # one user id, two shops' users
    cat = pq.read_table(catalog).to_pydict()
    assert cat["item_id"] == ["gifts/g1", "gifts/g2", "films/f1"] and cat["title"][2] == "Toy Story"
    with pytest.raises(ValueError, match="distinct shops"):
        pool_logs([a, a], tmp_path / "again")
    cfg = pooled_config({"model": {"hidden_size": 16}, "data": {"max_seq_len": 7, "source": "beauty"}}, events, catalog, "pool")
    assert cfg["data"] == {"max_seq_len": 7, "source": "files", "events_path": str(events), "catalog_path": str(catalog),
                           "format": "parquet", "name": "pool", "split": {"mode": "leave_one_out"}}
    assert cfg["model"] == {"hidden_size": 16} and cfg["run_name"] == "pool"


def test_a_pooled_model_is_carried_into_a_shops_model_by_item_id(tmp_path):
    from recsys.models import SeqRecConfig, SeqRecModel

    pool = shop(tmp_path, "pool", [("films/f1", "a"), ("gifts/g1", "b"), ("gifts/g2", "c")], [], attributes=["genre:x"])
    gifts = shop(tmp_path, "gifts", [("g0", "new"), ("g1", "b"), ("g2", "c")], [])
    torch.manual_seed(0)
    kw = {"hidden_size": 8, "num_heads": 2, "max_seq_len": 4, "text_embedding_dim": 3, "attribute_embeddings": False}
    source = SeqRecModel(SeqRecConfig(num_items=3, num_attributes=1, **kw))
    target = SeqRecModel(SeqRecConfig(num_items=3, num_attributes=0, **kw))
    fresh = target.items.id_embedding.weight.detach().clone()
    matched = transfer_weights(source, pool, target, gifts, "gifts/")
    assert matched == {"items": 2, "of_items": 3}
    src, dst = source.items.id_embedding.weight, target.items.id_embedding.weight
    assert torch.equal(dst[2], src[2]) and torch.equal(dst[3], src[3])  # g1, g2: pooled rows 2, 3
    assert torch.equal(dst[1], fresh[1])  # g0 is not in the pool: it keeps its fresh row
    assert torch.equal(dst[4], src[4])  # [MASK]
    assert torch.equal(target.items.text_projection.weight, source.items.text_projection.weight)
    for name, value in source.encoder.state_dict().items():
        assert torch.equal(target.encoder.state_dict()[name], value)
    wider = SeqRecModel(SeqRecConfig(num_items=3, num_attributes=0, **{**kw, "hidden_size": 16}))
    with pytest.raises(ValueError, match="architecture differs"):
        transfer_weights(source, pool, wider, gifts, "gifts/")


def test_pool_with_needs_text_and_pretraining_and_names_a_missing_config(tmp_path):
    from recsys.stages import pretraining_run

    path = tmp_path / "c.yaml"
    path.write_text("model: {text_features: false}\npretrain: {pool_with: [other.yaml]}\n")
    with pytest.raises(ConfigError, match="pretrain.pool_with needs model.text_features: true"):
        load_config(path)
    path.write_text("model: {text_features: true}\npretrain: {enabled: false, pool_with: [other.yaml]}\n")
    with pytest.raises(ConfigError, match="pretrain.pool_with needs pretrain.enabled: true"):
        load_config(path)
    path.write_text("model: {text_features: true}\npretrain: {pool_with: [no/such/shop.yaml]}\n")
    cfg = load_config(path)  # loads anywhere (a serving pod has no other shops' files) ...
    with pytest.raises(FileNotFoundError, match=r"pretrain.pool_with: no config file at \['no/such/shop.yaml'\]"):
        pretraining_run(cfg, None)  # ... and the pretrain stage names the missing one
