"""The Ray Data pipeline: canonical logs → per-user sequences → leave-one-out splits.

    events (Parquet) ──map_batches: keep interactions, item id → index──▶ interactions
    interactions ──repartition(keys=[user_id]) + map_batches: sort, collapse──▶ sequences
    sequences ──map_batches──▶ train (history) / valid (history, target) / test (history, target)

Item index 0 is padding, 1..N are catalog items (sorted by id), N+1 is the [MASK] token.
The valid target is the second-to-last item, the test target the last (S3-Rec's protocol); the
train split holds neither, so nothing from evaluation reaches training inputs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from recsys.artifacts import atomic_folder, point_latest
from recsys.config import RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.data.schema import CATALOG_SCHEMA, EVENTS_SCHEMA, SCHEMA_VERSION, check_columns
from recsys.data.sources import dataset_root, materialize_source

# Why an event did not become an interaction (counted in the manifest).
DROP_REASONS = ("not_interaction", "missing_item", "unknown_item")


def _classify_events(batch: pa.Table, item_ids: pa.Array, kinds: list[str]) -> pa.Table:
    """Keep interaction events with a known item; map item id → index; count the rest by reason."""
    is_kind = pc.is_in(batch["event_type"], value_set=pa.array(kinds))
    has_item = pc.is_valid(batch["item_id"])
    index = pc.index_in(batch["item_id"].cast(pa.string()), value_set=item_ids)
    known = pc.is_valid(index)
    keep = pc.and_(pc.and_(is_kind, has_item), known)
    out = pa.table(
        {
            "user_id": batch["user_id"].cast(pa.string()),
            "item": pc.add(index.cast(pa.int32()), 1),
            "ts": batch["timestamp"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()),
            "keep": keep,
            "not_interaction": pc.invert(is_kind).cast(pa.int64()),
            "missing_item": pc.and_(is_kind, pc.invert(has_item)).cast(pa.int64()),
            "unknown_item": pc.and_(pc.and_(is_kind, has_item), pc.invert(pc.fill_null(known, False))).cast(pa.int64()),
        }
    )
    return out


def _build_sequences(block: pa.Table, collapse_repeats: bool) -> pa.Table:
    """One row per user: items in time order. The block holds every row of its users."""
    block = block.filter(block["keep"]).select(["user_id", "item", "ts"])
    if block.num_rows == 0:
        return pa.table({"user_id": pa.array([], pa.string()), "items": pa.array([], pa.list_(pa.int32()))})
    t = block.sort_by([("user_id", "ascending"), ("ts", "ascending"), ("item", "ascending")])
    users = t["user_id"].combine_chunks()
    items = t["item"].to_numpy()
    new_user = np.ones(len(items), dtype=bool)
    new_user[1:] = pc.not_equal(users.slice(1), users.slice(0, len(users) - 1)).to_numpy(zero_copy_only=False)
    keep = new_user.copy()
    if collapse_repeats:
        keep[1:] |= items[1:] != items[:-1]
    else:
        keep[:] = True
    items, new_user, users = items[keep], new_user[keep], users.filter(pa.array(keep))
    starts = np.flatnonzero(new_user)
    offsets = np.append(starts, len(items)).astype(np.int32)
    return pa.table(
        {
            "user_id": users.take(pa.array(starts)),
            "items": pa.ListArray.from_arrays(pa.array(offsets), pa.array(items, pa.int32())),
        }
    )


def _split_leave_one_out(batch: pa.Table, min_len: int, split: str) -> pa.Table:
    """train: items[:-2]; valid: items[:-2] → items[-2]; test: items[:-1] → items[-1]."""
    rows = [(u, s) for u, s in zip(batch["user_id"].to_pylist(), batch["items"].to_pylist(), strict=True) if len(s) >= min_len]
    users = pa.array([u for u, _ in rows], pa.string())
    hist = pa.list_(pa.int32())
    if split == "train":
        return pa.table({"user_id": users, "items": pa.array([s[:-2] for _, s in rows], hist)})
    cut = 2 if split == "valid" else 1
    return pa.table(
        {
            "user_id": users,
            "history": pa.array([s[:-cut] for _, s in rows], hist),
            "target": pa.array([s[-cut] for _, s in rows], pa.int32()),
        }
    )


def _item_table(catalog: pa.Table) -> tuple[pa.Table, pa.Table, int]:
    """Deduplicate the catalog, give items indices 1..N and attributes indices 1..A."""
    check_columns(catalog.schema, CATALOG_SCHEMA, "catalog")
    n_rows = catalog.num_rows
    catalog = catalog.filter(pc.is_valid(catalog["item_id"]))
    catalog = catalog.sort_by("item_id")
    ids = catalog["item_id"].to_pylist()
    first = np.ones(len(ids), dtype=bool)
    first[1:] = [a != b for a, b in zip(ids[1:], ids[:-1], strict=True)]
    catalog = catalog.filter(pa.array(first))
    dropped = n_rows - catalog.num_rows

    def attrs_of(row: dict) -> list[str]:
        extra = [f"category:{row['category']}"] if row.get("category") else []
        extra += [f"brand:{row['brand']}"] if row.get("brand") else []
        return extra + list(row.get("attributes") or [])

    rows = catalog.to_pylist()
    item_attrs = [attrs_of(r) for r in rows]
    vocab = sorted({a for attrs in item_attrs for a in attrs})
    attr_index = {a: i + 1 for i, a in enumerate(vocab)}
    items = catalog.append_column("item_index", pa.array(np.arange(1, len(rows) + 1), pa.int32()))
    items = items.append_column(
        "attribute_indices", pa.array([[attr_index[a] for a in attrs] for attrs in item_attrs], pa.list_(pa.int32()))
    )
    attributes = pa.table({"attribute_index": pa.array(np.arange(1, len(vocab) + 1), pa.int32()), "attribute": vocab})
    return items, attributes, dropped


def prepare_dataset(cfg: RecsysConfig) -> PreparedDataset:
    """Run the pipeline and publish `<artifacts>/datasets/<name>/<version>` atomically."""
    t0 = time.perf_counter()
    source = materialize_source(cfg)
    version = f"{source.fingerprint[:8]}-{cfg.section_hash('data')[:8]}"
    root = dataset_root(cfg)
    final = root / version
    if (final / "manifest.json").is_file():
        point_latest(root, version)
        return PreparedDataset(final)

    check_columns(pq.read_schema(_first_parquet(source.events_path)), EVENTS_SCHEMA, f"events {source.events_path}")
    items, attributes, dup_items = _item_table(pq.read_table(source.catalog_path))
    item_ids = items["item_id"].combine_chunks()

    ctx = ray.data.DataContext.get_current()
    ctx.default_hash_shuffle_parallelism = 8  # 200 partitions is slow on a small cluster
    events = ray.data.read_parquet(source.events_path)
    classified = events.map_batches(
        _classify_events, batch_format="pyarrow", fn_kwargs={"item_ids": item_ids, "kinds": list(cfg.data.interaction_events)}
    ).materialize()
    sums = classified.sum(list(DROP_REASONS))
    drops = {reason: int(sums[f"sum({reason})"] or 0) for reason in DROP_REASONS}
    n_events = classified.count()

    sequences = (
        classified.repartition(8, keys=["user_id"])
        .map_batches(
            _build_sequences, batch_format="pyarrow", batch_size=None, fn_kwargs={"collapse_repeats": cfg.data.collapse_repeats}
        )
        .materialize()
    )
    n_users = sequences.count()
    if n_users == 0:
        raise ValueError(
            f"no interactions left from {source.events_path}: data.interaction_events={cfg.data.interaction_events} "
            f"matched nothing or no item is in the catalog (dropped: {drops})"
        )
    if len(sequences.unique("user_id")) != n_users:
        raise RuntimeError("a user's events were split across blocks; sequences would be wrong")

    with atomic_folder(final) as scratch:
        sequences.write_parquet(str(scratch / "sequences"))
        min_len = cfg.data.min_user_interactions
        counts = {}
        for split in ("train", "valid", "test"):
            part = sequences.map_batches(
                _split_leave_one_out, batch_format="pyarrow", fn_kwargs={"min_len": min_len, "split": split}
            ).materialize()
            counts[split] = part.count()
            part.write_parquet(str(scratch / split))
            if split == "train":
                train_counts = _item_counts(part, len(item_ids))
        items = items.append_column("train_count", pa.array(train_counts[1:], pa.int64()))
        pq.write_table(items, scratch / "items.parquet")
        pq.write_table(attributes, scratch / "attributes.parquet")
        n_interactions = n_events - sum(drops.values())
        manifest = {
            "name": source.name,
            "version": version,
            "schema_version": SCHEMA_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": {"kind": source.kind, "events": source.events_path, "catalog": source.catalog_path,
                       "fingerprint": source.fingerprint},
            "data_config": cfg.data.model_dump(mode="json"),
            "counts": {
                "events_read": n_events,
                "interactions": n_interactions,
                "dropped": drops,
                "duplicate_catalog_items": dup_items,
                "users": n_users,
                "users_too_short_for_eval": n_users - counts["test"],
                **{f"{k}_rows": v for k, v in counts.items()},
            },
            "vocab": {"num_items": len(item_ids), "num_attributes": attributes.num_rows,
                      "pad_index": 0, "mask_index": len(item_ids) + 1},
            "split": {"protocol": "leave_one_out", "valid": "second-to-last item", "test": "last item"},
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (scratch / "manifest.json").write_text(json.dumps(manifest, indent=2))
    point_latest(root, version)
    return PreparedDataset(final)


def _first_parquet(path: str) -> str:
    p = Path(path)
    if p.is_file():
        return str(p)
    files = sorted(p.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files under {path}")
    return str(files[0])


def _item_counts(train: ray.data.Dataset, num_items: int) -> np.ndarray:
    """How often each item index occurs in training histories (popularity, leak-free)."""

    def count(batch: pa.Table) -> dict:
        flat = pc.list_flatten(batch["items"]).to_numpy()
        return {"counts": [np.bincount(flat, minlength=num_items + 1)]}

    partial = train.map_batches(count, batch_format="pyarrow").take_all()
    return np.sum([r["counts"] for r in partial], axis=0) if partial else np.zeros(num_items + 1, np.int64)
