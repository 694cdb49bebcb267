"""The Ray Data pipeline: raw logs → validated events → per-user sequences → leak-free splits + examples.

    raw files ──read (Parquet/JSONL/CSV)──▶ raw rows ──map_batches: validate_events──▶ good │ quarantine
    good ──repartition(keys=[user_id]) + map_batches: sort, dedup, sessionize──▶ annotated events
    annotated ──map_batches (whole blocks)──▶ sequences ──▶ train / valid / test (leave_one_out | time)
    annotated ──map_batches (whole blocks)──▶ examples/ctr (impressions + click labels), examples/search

Item index 0 is padding, 1..N are vocabulary items (sorted by id), N+1 is the [MASK] token. The
vocabulary is the catalog (leave_one_out) or the items seen before the valid cut (time split).
Conservation: rows read = rows in `events/` + rows in `quarantine/`, and the manifest records both.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from recsys.artifacts import atomic_folder, point_latest
from recsys.config import RecsysConfig
from recsys.data.catalog import item_table, unique_catalog
from recsys.data.cold import cold_item_table, cold_targets
from recsys.data.dataset import PreparedDataset
from recsys.data.examples import ctr_examples, search_pairs
from recsys.data.readers import read_catalog, read_raw_events
from recsys.data.schema import EVENTS_SCHEMA, SCHEMA_VERSION
from recsys.data.shaping import annotate_user_events, build_sequences, compact_events
from recsys.data.sources import SourceFiles, dataset_root, materialize_source, source_report
from recsys.data.splits import leave_one_out, time_cut
from recsys.data.validation import (
    QUARANTINE_SCHEMA,
    REASONS,
    QuarantineThresholdExceeded,
    check_quarantine,
    good_rows,
    quarantined_rows,
    validate_events,
)

_ROWS_PER_PARTITION = 1_500_000


@dataclass
class ShapedEvents:
    """Validated, deduplicated, sessionized events, one block per group of whole users."""

    annotated: ray.data.Dataset
    quarantine: list[ray.data.Dataset]
    reasons: dict[str, int]
    rows_read: int
    vocab: pa.Array
    cuts: tuple[int, int]


def _reason_counts(batch: pa.Table) -> dict:
    counts = {row["values"]: row["counts"] for row in pc.value_counts(pc.drop_null(batch["reason"])).to_pylist()}
    return {"counts": [json.dumps(counts)], "rows": [batch.num_rows]}


def _interaction_times(good: ray.data.Dataset, kinds: list[str]) -> np.ndarray:
    def pick(batch: pa.Table) -> pa.Table:
        keep = pc.and_(pc.is_in(batch["event_type"], value_set=pa.array(kinds)), pc.is_valid(batch["item_id"]))
        return pa.table({"t": batch.filter(keep)["timestamp"].cast(pa.int64())})

    refs = good.map_batches(pick, batch_format="pyarrow", batch_size=None).to_arrow_refs()
    tables = [t for t in ray.get(refs) if t.num_rows]
    return pa.concat_tables(tables)["t"].to_numpy() if tables else np.zeros(0, np.int64)


def _time_cuts(cfg: RecsysConfig, good: ray.data.Dataset) -> tuple[int, int]:
    split = cfg.data.split
    if split.valid_cutoff is not None:
        return int(split.valid_cutoff.timestamp() * 1000), int(split.test_cutoff.timestamp() * 1000)
    times = _interaction_times(good, list(cfg.data.interaction_events))
    if len(times) == 0:
        raise ValueError("data.split.mode=time: no interaction events to place the cut between")
    valid, test = np.quantile(times, [split.valid_quantile, split.test_quantile], method="higher")
    if valid >= test:
        raise ValueError(
            f"data.split quantiles {split.valid_quantile}/{split.test_quantile} give the same time; "
            "set data.split.valid_cutoff and test_cutoff explicitly"
        )
    return int(valid), int(test)


def _train_vocab(good: ray.data.Dataset, kinds: list[str], valid_cut: int) -> pa.Array:
    def items_before(batch: pa.Table) -> pa.Table:
        keep = pc.and_(pc.is_in(batch["event_type"], value_set=pa.array(kinds)),
                       pc.less(batch["timestamp"].cast(pa.int64()), valid_cut))
        return pa.table({"item_id": pc.unique(pc.drop_null(batch.filter(keep)["item_id"]))})

    tables = ray.get(good.map_batches(items_before, batch_format="pyarrow", batch_size=None).to_arrow_refs())
    return pc.unique(pa.concat_tables(tables)["item_id"]) if tables else pa.array([], pa.string())


def validate_and_shape(cfg: RecsysConfig, source: SourceFiles, catalog_ids: pa.Array, materialize: bool = True) -> ShapedEvents:
    """Read, validate, deduplicate and sessionize. Raises only on file-level problems.

    `materialize=False` leaves the annotated events lazy, for a caller that derives one output from
    them (the benchmark); `prepare_dataset` derives five, so it keeps them in the object store.
    """
    vcfg = cfg.data.validation.model_dump()
    raw = read_raw_events(source.events_path, source.format)
    validated = raw.map_batches(validate_events, batch_format="pyarrow", batch_size=None,
                                fn_kwargs={"cfg": vcfg, "item_ids": catalog_ids}).materialize()
    tallies = validated.map_batches(_reason_counts, batch_format="pyarrow", batch_size=None).take_all()
    reasons: Counter = Counter()
    for t in tallies:
        reasons.update(json.loads(t["counts"]))
    rows_read = sum(int(t["rows"]) for t in tallies)
    if rows_read == 0:
        raise ValueError(f"no events in {source.events_path}: the files hold no rows")
    good = validated.map_batches(good_rows, batch_format="pyarrow", batch_size=None)
    bad = validated.map_batches(quarantined_rows, batch_format="pyarrow", batch_size=None)

    cuts, vocab, to_vocab = (0, 0), catalog_ids, None
    if cfg.data.split.mode == "time":
        cuts = _time_cuts(cfg, good)
        vocab = _train_vocab(good, list(cfg.data.interaction_events), cuts[0])
        vocab = vocab.take(pc.sort_indices(vocab))
        # catalog position → 1-based vocabulary index (0: not in it)
        to_vocab = pc.add(pc.fill_null(pc.index_in(catalog_ids, value_set=vocab), -1), 1).to_numpy().astype(np.int32)

    partitions = max(4, math.ceil(rows_read / _ROWS_PER_PARTITION))
    annotated = (
        good.map_batches(compact_events, batch_format="pyarrow", batch_size=None, fn_kwargs={"catalog_ids": catalog_ids})
        .repartition(partitions, keys=["user_id"])
        .map_batches(annotate_user_events, batch_format="pyarrow", batch_size=None,
                     fn_kwargs={"gap_ms": int(cfg.data.session_gap_minutes * 60_000), "catalog_ids": catalog_ids,
                                "to_vocab": to_vocab})
    )
    annotated = annotated.materialize() if materialize else annotated
    # Duplicates are counted when their quarantine part is written (`_prepare`), not in an extra pass.
    quarantine = [bad, annotated.filter(expr="duplicate").map_batches(_duplicates_to_quarantine, batch_format="pyarrow", batch_size=None)]
    return ShapedEvents(annotated, quarantine, {r: reasons.get(r, 0) for r in REASONS}, rows_read, vocab, cuts)


def _duplicates_to_quarantine(batch: pa.Table) -> pa.Table:
    stamps = batch["timestamp"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.string())
    cols = {f.name: batch[f.name].cast(pa.string()) for f in EVENTS_SCHEMA if f.name != "timestamp"}
    return pa.table({**cols, "timestamp": stamps, "_record": pa.nulls(batch.num_rows, pa.string()),
                     "_source": pa.nulls(batch.num_rows, pa.string()),
                     "reason": pa.array(["duplicate_event"] * batch.num_rows, pa.string())}).select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)


def _events_out(batch: pa.Table) -> pa.Table:
    """Annotated rows back in the canonical schema (plus the derived session), duplicates removed."""
    batch = batch.filter(pc.invert(batch["duplicate"]))
    cols = {f.name: batch[f.name] for f in EVENTS_SCHEMA if f.name != "timestamp"}
    return pa.table({**cols, "timestamp": batch["timestamp"].cast(pa.timestamp("ms", tz="UTC")),
                     "session": batch["session"]}).select([*EVENTS_SCHEMA.names, "session"])


def prepare_dataset(cfg: RecsysConfig) -> PreparedDataset:
    """Run the pipeline and publish `<artifacts>/datasets/<name>/<version>` atomically."""
    t0 = time.perf_counter()
    source = materialize_source(cfg)
    # The schema version is in the name: a prepared layout from older code is never reused.
    version = f"{source.fingerprint[:8]}-{cfg.section_hash('data')[:8]}-s{SCHEMA_VERSION}"
    root = dataset_root(cfg)
    final = root / version
    if (final / "manifest.json").is_file():
        point_latest(root, version)
        return PreparedDataset(final)

    with prepare_context():
        return _prepare(cfg, source, version, final, root, t0)


@contextmanager
def prepare_context() -> Iterator[None]:
    """Ray Data settings the pipeline relies on, restored afterwards."""
    ctx = ray.data.DataContext.get_current()
    names = ("target_max_block_size", "default_hash_shuffle_parallelism")
    saved = {n: getattr(ctx, n) for n in names}
    # Whole-user blocks must not be split by size; 200 shuffle partitions is slow on a small cluster.
    ctx.target_max_block_size, ctx.default_hash_shuffle_parallelism = None, 8
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(ctx, n, v)


def _prepare(cfg: RecsysConfig, source: SourceFiles, version: str, final, root, t0: float) -> PreparedDataset:
    catalog, dup_items = unique_catalog(read_catalog(source.catalog_path, "auto" if source.kind != "files" else source.format))
    shaped = validate_and_shape(cfg, source, catalog["item_id"].combine_chunks())
    items, attributes = item_table(catalog, shaped.vocab)
    # Fail fast on row-level reasons; duplicates are added to the count once their part is written.
    # A rejected input keeps its quarantine beside the versions, for inspection.
    rejected = root / "rejected" / version
    max_fraction = cfg.data.validation.max_quarantine_fraction
    try:
        check_quarantine(shaped.reasons, shaped.rows_read, max_fraction, str(rejected))
    except QuarantineThresholdExceeded:
        shutil.rmtree(rejected, ignore_errors=True)
        shaped.quarantine[0].write_parquet(str(rejected))
        raise

    data, split_cfg = cfg.data, cfg.data.split
    kinds = list(data.interaction_events)
    sequences = shaped.annotated.map_batches(
        build_sequences, batch_format="pyarrow", batch_size=None,
        fn_kwargs={"kinds": kinds, "collapse_repeats": data.collapse_repeats},
    ).materialize()
    n_users = sequences.count()
    if n_users == 0:
        raise ValueError(
            f"no interactions left from {source.events_path}: data.interaction_events={data.interaction_events} "
            f"matched no valid event on a known item (quarantined: {_nonzero(shaped.reasons)})"
        )
    if len(sequences.unique("user_id")) != n_users:
        raise RuntimeError("a user's events were split across blocks; sequences would be wrong")

    example_args = {"kinds": kinds, "collapse_repeats": data.collapse_repeats, "mode": split_cfg.mode,
                    "min_len": data.min_user_interactions, "valid_cut": shaped.cuts[0], "test_cut": shaped.cuts[1]}
    with atomic_folder(final) as scratch:
        events_out = shaped.annotated.map_batches(_events_out, batch_format="pyarrow", batch_size=None)
        events_out.write_parquet(str(scratch / "events"))
        n_quarantined = 0
        for part in shaped.quarantine:
            part = part.materialize()
            n_quarantined += part.count()
            part.write_parquet(str(scratch / "quarantine"))
        shaped.reasons["duplicate_event"] = n_quarantined - sum(v for k, v in shaped.reasons.items() if k != "duplicate_event")
        try:
            check_quarantine(shaped.reasons, shaped.rows_read, max_fraction, str(rejected))
        except QuarantineThresholdExceeded:
            shutil.rmtree(rejected, ignore_errors=True)
            shutil.copytree(scratch / "quarantine", rejected)
            raise
        n_events_out = sum(pq.ParquetFile(f).metadata.num_rows for f in (scratch / "events").rglob("*.parquet"))
        if n_events_out + n_quarantined != shaped.rows_read:
            raise RuntimeError(f"row conservation broken: read {shaped.rows_read}, wrote {n_events_out} + "
                               f"{n_quarantined} quarantined")
        sequences.write_parquet(str(scratch / "sequences"))
        counts = {}
        for split in ("train", "valid", "test"):
            if split_cfg.mode == "time":
                fn, kw = time_cut, {"valid_cut": shaped.cuts[0], "test_cut": shaped.cuts[1]}
            else:
                fn, kw = leave_one_out, {"min_len": data.min_user_interactions}
            part = sequences.map_batches(fn, batch_format="pyarrow", batch_size=None,
                                         fn_kwargs={"split": split, "max_len": data.max_seq_len, **kw}).materialize()
            counts[split] = part.count()
            part.write_parquet(str(scratch / split))
            if split == "train":
                train_counts = _item_counts(part, len(shaped.vocab))
        for name, fn in (("ctr", ctr_examples), ("search", search_pairs)):
            ex = shaped.annotated.map_batches(fn, batch_format="pyarrow", batch_size=None, fn_kwargs=example_args).materialize()
            counts[f"{name}_examples"] = _count_by_split(ex)
            ex.write_parquet(str(scratch / "examples" / name))
        items = items.append_column("train_count", pa.array(train_counts[1:], pa.int64()))
        pq.write_table(items, scratch / "items.parquet")
        cold_counts = _write_cold(cfg, shaped, catalog, attributes, scratch) if split_cfg.mode == "time" else {}
        pq.write_table(attributes, scratch / "attributes.parquet")
        manifest = {
            "name": source.name,
            "version": version,
            "schema_version": SCHEMA_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": {"kind": source.kind, "events": source.events_path, "catalog": source.catalog_path,
                       "format": source.format, "fingerprint": source.fingerprint},
            "data_config": cfg.data.model_dump(mode="json"),
            "counts": {
                "events_read": shaped.rows_read,
                "events_valid": n_events_out,
                "quarantined": n_quarantined,
                "duplicate_catalog_items": dup_items,
                "users": n_users,
                "users_not_in_test": n_users - counts["test"],  # too short (leave_one_out) or no step after the cut (time)
                **{f"{k}_rows": v for k, v in counts.items() if isinstance(v, int)},
                **{k: v for k, v in counts.items() if isinstance(v, dict)},
                **cold_counts,
            },
            "quarantine": {"path": "quarantine", "reasons": shaped.reasons,
                           "max_fraction": cfg.data.validation.max_quarantine_fraction},
            # a raw log's own reasons (Online Retail: cancellations, guest checkouts, …), before these events
            "source_quarantine": source_report(source),
            "vocab": {"num_items": len(shaped.vocab), "num_attributes": attributes.num_rows,
                      "pad_index": 0, "mask_index": len(shaped.vocab) + 1,
                      "source": "catalog" if split_cfg.mode == "leave_one_out" else "train side of the time split"},
            "split": _split_manifest(cfg, shaped.cuts),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (scratch / "manifest.json").write_text(json.dumps(manifest, indent=2))
    point_latest(root, version)
    return PreparedDataset(final)


def _write_cold(cfg: RecsysConfig, shaped: ShapedEvents, catalog: pa.Table, attributes: pa.Table, scratch) -> dict:
    """Time split: the catalog items outside the vocabulary and their targets (recsys/data/cold.py)."""
    cold_items = cold_item_table(catalog, shaped.vocab, attributes)
    pq.write_table(cold_items, scratch / "cold_items.parquet")
    targets = shaped.annotated.map_batches(
        cold_targets, batch_format="pyarrow", batch_size=None,
        fn_kwargs={"kinds": list(cfg.data.interaction_events), "collapse_repeats": cfg.data.collapse_repeats,
                   "valid_cut": shaped.cuts[0], "test_cut": shaped.cuts[1], "max_len": cfg.data.max_seq_len,
                   "cold_ids": cold_items["item_id"].combine_chunks(), "num_items": len(shaped.vocab)},
    ).materialize()
    targets.write_parquet(str(scratch / "cold_targets"))
    return {"cold_items": cold_items.num_rows, "cold_targets": _count_by_split(targets)}


def _nonzero(reasons: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in reasons.items() if v}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def _split_manifest(cfg: RecsysConfig, cuts: tuple[int, int]) -> dict:
    if cfg.data.split.mode == "leave_one_out":
        return {"protocol": "leave_one_out", "valid": "second-to-last item", "test": "last item",
                "min_user_interactions": cfg.data.min_user_interactions, "max_seq_len": cfg.data.max_seq_len}
    return {"protocol": "time", "valid_cutoff": _iso(cuts[0]), "test_cutoff": _iso(cuts[1]),
            "valid_cutoff_ms": cuts[0], "test_cutoff_ms": cuts[1], "max_seq_len": cfg.data.max_seq_len}


def _count_by_split(ds: ray.data.Dataset) -> dict[str, int]:
    def count(batch: pa.Table) -> dict:
        c = Counter(batch["split"].to_pylist())
        return {"counts": [json.dumps(c)]}

    total: Counter = Counter({"train": 0, "valid": 0, "test": 0})
    for row in ds.map_batches(count, batch_format="pyarrow", batch_size=None).take_all():
        total.update(json.loads(row["counts"]))
    return dict(total)


def _item_counts(train: ray.data.Dataset, num_items: int) -> np.ndarray:
    """How often each item index occurs in training histories (popularity, leak-free)."""

    def count(batch: pa.Table) -> dict:
        flat = pc.list_flatten(batch["items"]).to_numpy()
        return {"counts": [np.bincount(flat, minlength=num_items + 2)[: num_items + 1]]}

    partial = train.map_batches(count, batch_format="pyarrow", batch_size=None).take_all()
    return np.sum([r["counts"] for r in partial], axis=0) if partial else np.zeros(num_items + 1, np.int64)
