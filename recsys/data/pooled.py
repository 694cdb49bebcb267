"""The pooled logs of several shops, for one pretraining run over all of them.

Each shop's prepared dataset contributes its training period only (events before its own valid
cut: nothing a shop evaluates on is pretrained on) and the catalog of its vocabulary. Ids are
namespaced by the shop's dataset name (`online_retail/85123A`, `movielens/50`; users likewise), so
no two shops' items or users are confused; attributes keep their names, so a genre shared by two
shops is one attribute. Text is what makes the pool useful: a title means the same thing in any
shop, through the same frozen MiniLM and one learned projection.

The result is a `data.source: files` input (events.parquet, catalog.parquet in the canonical
schemas), prepared like any other log; `pooled_config` is that config. `pretrain.pool_with` turns
it on (recsys.stages.pretraining_run); finetune then starts from the pooled model
(recsys/train/transfer.py).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.artifacts import Dataset, atomic_folder
from recsys.data.schema import CATALOG_SCHEMA, EVENTS_SCHEMA


def _prefixed(col: pa.ChunkedArray, prefix: str) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(pa.scalar(prefix), col.cast(pa.string()), "")


def pool_logs(datasets: list[Dataset], out: Path) -> tuple[Path, Path]:
    """Write the pooled events and catalog of `datasets` under `out`; returns (events, catalog)."""
    names = [d.manifest["name"] for d in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"pooling needs distinct shops; got the dataset names {names}")
    events, catalogs = [], []
    for dataset, name in zip(datasets, names, strict=True):
        split = dataset.manifest["split"]
        if split["protocol"] != "time":
            raise ValueError(f"{dataset.path}: pooling takes time-split datasets (their training period is one cut); "
                             f"{name} is split {split['protocol']}")
        ev = pq.read_table(dataset.split_dir("events"), columns=EVENTS_SCHEMA.names)
        ev = ev.filter(pc.less(ev["timestamp"].cast(pa.int64()), split["valid_cutoff_ms"]))
        items = pq.read_table(dataset.path / "items.parquet", columns=CATALOG_SCHEMA.names)
        ev = ev.filter(pc.is_in(ev["item_id"], value_set=items["item_id"]))
        events.append(ev.set_column(0, "user_id", _prefixed(ev["user_id"], f"{name}/"))
                        .set_column(1, "item_id", _prefixed(ev["item_id"], f"{name}/")))
        catalogs.append(items.set_column(0, "item_id", _prefixed(items["item_id"], f"{name}/")))
    with atomic_folder(out) as scratch:
        pq.write_table(pa.concat_tables(events).cast(EVENTS_SCHEMA), scratch / "events.parquet")
        pq.write_table(pa.concat_tables(catalogs).cast(CATALOG_SCHEMA), scratch / "catalog.parquet")
    return out / "events.parquet", out / "catalog.parquet"


SHAPING_KEYS = ("max_seq_len", "max_attributes_per_item", "interaction_events", "collapse_repeats", "session_gap_minutes")


def pooled_config(raw: dict, events: Path, catalog: Path, name: str) -> dict:
    """A shop config's raw dict turned into the pooled pretraining config: the same model, pretrain
    and sequence-shaping settings, the pooled files as input, split leave-one-out (only `train` is
    read: each user's pooled sequence minus its last two steps, users with at least three)."""
    data = {k: v for k, v in raw.get("data", {}).items() if k in SHAPING_KEYS}
    data.update({"source": "files", "events_path": str(events), "catalog_path": str(catalog), "format": "parquet",
                 "name": name, "split": {"mode": "leave_one_out"}})
    return {**raw, "run_name": name, "data": data}
