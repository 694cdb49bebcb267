"""The data platform end to end on Ray: messy JSONL/CSV logs, quarantine, conservation, the time split,
shard coverage under Ray Train, and both real-dataset adapters."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recsys.config import validate_config
from recsys.data.synthetic import generate_shop

pytestmark = pytest.mark.integration

SHOP = {"num_users": 150, "num_items": 60, "seed": 5}
# Bad rows injected into the logs, one group per reason (counts must come back exactly).
BAD_ROWS = {
    "missing_user_id": [{"item_id": "sku-0000001", "event_type": "click", "timestamp": "2024-02-01T00:00:00Z"}] * 3,
    "bad_timestamp": [{"user_id": "u-x", "item_id": "sku-0000001", "event_type": "click", "timestamp": "soon"}] * 2,
    "unknown_event_type": [{"user_id": "u-x", "item_id": "sku-0000001", "event_type": "like", "timestamp": "2024-02-01T00:00:00Z"}],
    "unknown_item": [{"user_id": "u-x", "item_id": "sku-9999999", "event_type": "click", "timestamp": "2024-02-01T00:00:00Z"}] * 4,
    "timestamp_out_of_range": [{"user_id": "u-x", "item_id": "sku-0000001", "event_type": "click", "timestamp": "1980-01-01T00:00:00Z"}],
    "missing_query": [{"user_id": "u-x", "event_type": "search", "timestamp": "2024-02-01T00:00:00Z"}],
}


def _rows(events: pa.Table) -> list[dict]:
    out = []
    for r in events.to_pylist():
        r["timestamp"] = r["timestamp"].isoformat()
        out.append({k: v for k, v in r.items() if v is not None})
    return out


@pytest.fixture(scope="module")
def messy_logs(tmp_path_factory) -> dict:
    """The synthetic shop as JSONL and CSV, plus bad rows, exact duplicates and one unparsable line."""
    root = tmp_path_factory.mktemp("logs")
    events, catalog = generate_shop(validate_config({"data": {"synthetic": SHOP}}).data.synthetic)
    good = _rows(events)
    bad = [r for rows in BAD_ROWS.values() for r in rows]
    dups = good[:5]
    pq.write_table(catalog, root / "catalog.parquet")
    (root / "jsonl").mkdir()
    half = len(good) // 2
    for i, chunk in enumerate([good[:half] + bad, good[half:] + dups]):
        lines = [json.dumps(r) for r in chunk] + (["{broken json"] if i == 0 else [])
        (root / "jsonl" / f"part-{i}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "csv").mkdir()
    fields = ["user_id", "item_id", "event_type", "timestamp", "query", "session_id"]
    with open(root / "csv" / "events.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(good + bad + dups)
    return {"root": root, "good": len(good), "bad": len(bad), "dups": len(dups), "catalog": root / "catalog.parquet"}


def _cfg(tmp: Path, events: str, catalog: str, **data) -> object:
    return validate_config({
        "artifacts": {"root": str(tmp)},
        "data": {"source": "files", "events_path": events, "catalog_path": catalog,
                 "validation": {"max_quarantine_fraction": 0.1}, **data},
    })


def _sequences(ds) -> dict:
    s = ds.read_split("sequences")
    return {u: list(i) for u, i in zip(s["user_id"], s["items"], strict=True)}


def test_jsonl_quarantine_counts_and_conservation(ray_session, messy_logs, tmp_path):
    from recsys.data.pipeline import prepare_dataset

    logs = messy_logs
    ds = prepare_dataset(_cfg(tmp_path, str(logs["root"] / "jsonl"), str(logs["catalog"])))
    m = ds.manifest
    reasons = m["quarantine"]["reasons"]
    for reason, rows in BAD_ROWS.items():
        assert reasons[reason] == len(rows), reason
    assert reasons["malformed_record"] == 1 and reasons["duplicate_event"] == logs["dups"]
    read = logs["good"] + logs["bad"] + logs["dups"] + 1
    c = m["counts"]
    assert c["events_read"] == read
    assert c["events_valid"] == logs["good"] and c["quarantined"] == read - logs["good"]
    events = pq.read_table(ds.path / "events")
    quarantine = pq.read_table(ds.path / "quarantine")
    assert events.num_rows + quarantine.num_rows == read  # nothing lost
    assert set(quarantine["reason"].to_pylist()) == set(BAD_ROWS) | {"malformed_record", "duplicate_event"}
    assert "{broken json" in quarantine["_record"].to_pylist()
    assert set(events["event_type"].to_pylist()) == {"impression", "click", "add_to_cart", "purchase", "search"}
    assert c["ctr_examples"]["train"] > 0 and c["search_examples"]["train"] > 0


def test_csv_gives_the_same_sequences_as_jsonl(ray_session, messy_logs, tmp_path):
    from recsys.data.pipeline import prepare_dataset

    logs = messy_logs
    from_jsonl = prepare_dataset(_cfg(tmp_path / "j", str(logs["root"] / "jsonl"), str(logs["catalog"])))
    from_csv = prepare_dataset(_cfg(tmp_path / "c", str(logs["root"] / "csv"), str(logs["catalog"])))
    assert _sequences(from_csv) == _sequences(from_jsonl)
    assert from_csv.manifest["counts"]["quarantined"] == logs["bad"] + logs["dups"]  # no broken line in the CSV


def test_too_much_bad_data_fails_with_the_threshold_named(ray_session, messy_logs, tmp_path):
    from recsys.data.pipeline import prepare_dataset
    from recsys.data.validation import QuarantineThresholdExceeded

    cfg = _cfg(tmp_path, str(messy_logs["root"] / "jsonl"), str(messy_logs["catalog"]),
               validation={"max_quarantine_fraction": 0.0001})
    with pytest.raises(QuarantineThresholdExceeded, match=r"max_quarantine_fraction=0.0001.*unknown_item: 4 rows"):
        prepare_dataset(cfg)
    assert not any((tmp_path / "datasets").rglob("manifest.json"))  # nothing published
    rejected = next((tmp_path / "datasets").glob("*/rejected/*"))  # but the bad rows are kept to look at
    assert pq.read_table(rejected)["reason"].to_pylist().count("unknown_item") == 4


def test_missing_column_names_the_file_and_column(ray_session, tmp_path):
    from recsys.data.pipeline import prepare_dataset
    from recsys.data.schema import SchemaError

    pq.write_table(pa.table({"user_id": ["u1"], "item_id": ["a"]}), tmp_path / "events.parquet")
    pq.write_table(pa.table({"item_id": ["a"]}), tmp_path / "catalog.parquet")
    with pytest.raises(SchemaError, match=r"events.parquet: missing required column\(s\) event_type, timestamp"):
        prepare_dataset(_cfg(tmp_path, str(tmp_path / "events.parquet"), str(tmp_path / "catalog.parquet")))


def test_time_split_leaks_nothing(ray_session, tmp_path):
    from recsys.data.pipeline import prepare_dataset

    cfg = validate_config({"artifacts": {"root": str(tmp_path)},
                           "data": {"source": "synthetic", "synthetic": SHOP, "split": {"mode": "time"}}})
    ds = prepare_dataset(cfg)
    split = ds.manifest["split"]
    vcut, tcut = split["valid_cutoff_ms"], split["test_cutoff_ms"]
    seqs = ds.read_split("sequences").set_index("user_id")
    for name, cut in (("train", vcut), ("valid", vcut), ("test", tcut)):
        part = ds.read_split(name)
        assert len(part) > 0, name
        for _, row in part.iterrows():
            items, stamps = list(seqs.loc[row["user_id"], "items"]), list(seqs.loc[row["user_id"], "timestamps"])
            keep = cfg.data.max_seq_len + (name == "train")  # training rows keep one more (next-item targets)
            before = [i for i, t in zip(items, stamps, strict=True) if t < cut][-keep:]
            assert list(row["items" if name == "train" else "history"]) == before  # only the past, all of it
            if name != "train":
                end = tcut if name == "valid" else float("inf")
                assert row["target"] == next(i for i, t in zip(items, stamps, strict=True) if cut <= t < end)
    # Vocabulary from the training side only: every item was interacted with before the valid cut.
    events = pq.read_table(ds.path / "events").to_pandas()
    train_side = events[events["event_type"].isin(cfg.data.interaction_events) & (events["timestamp"].astype("int64") // 10**6 < vcut)]
    assert set(ds.items()["item_id"]) == set(train_side["item_id"])
    ctr = pq.read_table(ds.path / "examples" / "ctr").to_pandas()
    assert (ctr[ctr["split"] == "train"]["timestamp"] < vcut).all()
    assert (ctr[ctr["split"] == "test"]["timestamp"] >= tcut - 10 * 60_000).all()


def test_training_shards_are_disjoint_and_cover_the_split(ray_session, tiny_run, tmp_path):
    import ray.train
    from ray.train.torch import TorchTrainer

    from recsys.train.seqrec_tasks import training_dataset

    def probe(config):
        shard = ray.train.get_dataset_shard("train")
        users = [u for b in shard.iter_batches(batch_size=64, batch_format="pyarrow") for u in b["user_id"].to_pylist()]
        rank = ray.train.get_context().get_world_rank()
        Path(config["out"], f"rank{rank}.json").write_text(json.dumps(users))

    cfg = tiny_run.cfg
    TorchTrainer(
        probe, train_loop_config={"out": str(tmp_path)},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="shard-probe", storage_path=str(tmp_path / "runs")),
        datasets={"train": training_dataset(cfg, "pretrain", tiny_run.dataset)},
    ).fit()
    seen = [json.loads(Path(tmp_path, f"rank{r}.json").read_text()) for r in (0, 1)]
    expected = tiny_run.dataset.read_split("train")["user_id"].tolist()
    assert seen[0] and seen[1]  # both workers got data
    assert not set(seen[0]) & set(seen[1])  # disjoint
    assert sorted(seen[0] + seen[1]) == sorted(expected)  # together exactly the split, no row twice


def test_movielens_adapter_and_time_split(ray_session, tmp_path, shared_datasets):
    from recsys.data.pipeline import prepare_dataset

    cfg = validate_config({"artifacts": {"root": str(tmp_path)},
                           "data": {"source": "movielens", "movielens_dir": str(shared_datasets / "ml-100k"),
                                    "split": {"mode": "time"}}})
    ds = prepare_dataset(cfg)
    c = ds.manifest["counts"]
    assert c["events_read"] == 100_000 and c["quarantined"] == 0 and c["users"] == 943
    titles = ds.items().set_index("item_id")["title"]
    assert titles["1"] == "Toy Story"
    assert ds.manifest["split"]["valid_cutoff"] < ds.manifest["split"]["test_cutoff"]
    assert c["test_rows"] > 0 and c["valid_rows"] > 0


def test_beauty_prepared_counts(ray_session, tmp_path, shared_datasets):
    from recsys.data.pipeline import prepare_dataset

    cfg = validate_config({"artifacts": {"root": str(tmp_path)},
                           "data": {"source": "beauty", "beauty_dir": str(shared_datasets / "amazon-beauty")}})
    ds = prepare_dataset(cfg)
    c = ds.manifest["counts"]
    assert (c["events_read"], c["events_valid"], c["users"], ds.num_items) == (198_502, 198_502, 22_363, 12_101)
    assert c["test_rows"] == 22_363 and pc.sum(pq.read_table(ds.path / "items.parquet")["train_count"]).as_py() > 0


def test_data_stats_prints_figures_and_writes_plots(ray_session, tmp_path, capsys):
    from recsys.cli import main
    from recsys.data.pipeline import prepare_dataset

    cfg = validate_config({"artifacts": {"root": str(tmp_path)}, "data": {"source": "synthetic", "synthetic": SHOP}})
    ds = prepare_dataset(cfg)
    assert main(["data", "stats", str(ds.path.parent), "--out", str(tmp_path / "plots"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{ds.manifest['counts']['events_read']:,} read" in out and "sessions/user" in out
    for name in ("sequence_lengths", "popularity", "events_per_day"):
        png = tmp_path / "plots" / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    assert main(["data", "stats", str(tmp_path / "nope")]) == 1
