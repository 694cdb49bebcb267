"""Amazon Beauty (S3-Rec 5-core split) → canonical events + catalog.

`Beauty.txt` holds one user per line with items oldest first, but no timestamps; we give each
user's k-th interaction the timestamp `EPOCH + k seconds`, which keeps the published order (the
only thing the leave-one-out protocol uses). A review is treated as a purchase.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from recsys.data.schema import CATALOG_SCHEMA, EVENTS_SCHEMA

SEQUENCES_FILE = "Beauty.txt"
ATTRIBUTES_FILE = "Beauty_item2attributes.json"
_EPOCH_MS = int(datetime(2014, 1, 1, tzinfo=UTC).timestamp() * 1000)


def beauty_files(beauty_dir: str | Path) -> list[Path]:
    root = Path(beauty_dir)
    files = [root / SEQUENCES_FILE, root / ATTRIBUTES_FILE]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Amazon Beauty not found: missing {', '.join(missing)}. Set data.beauty_dir to the folder "
            "holding Beauty.txt and Beauty_item2attributes.json (../shared/datasets/amazon-beauty), "
            "or use data.source: synthetic."
        )
    return files


def read_beauty(beauty_dir: str | Path) -> tuple[pa.Table, pa.Table]:
    """Return (events, catalog) tables in the canonical schemas."""
    seq_file, attr_file = beauty_files(beauty_dir)
    users, items, stamps = [], [], []
    for line_no, line in enumerate(seq_file.read_text().splitlines(), start=1):
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"{seq_file}:{line_no}: expected 'user_id item_id ...', got {line!r}")
        user, seq = parts[0], parts[1:]
        users.extend([user] * len(seq))
        items.extend(seq)
        stamps.extend(_EPOCH_MS + 1000 * k for k in range(len(seq)))
    n = len(items)
    events = pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "item_id": pa.array(items, pa.string()),
            "event_type": pa.array(["purchase"] * n, pa.string()),
            "timestamp": pa.array(stamps, pa.timestamp("ms", tz="UTC")),
            "query": pa.nulls(n, pa.string()),
            "session_id": pa.nulls(n, pa.string()),
        },
        schema=EVENTS_SCHEMA,
    )
    item_attrs: dict[str, list[int]] = json.loads(attr_file.read_text())
    ids = sorted(set(items) | set(item_attrs), key=int)
    catalog = pa.table(
        {
            "item_id": ids,
            # The S3-Rec file carries attribute ids only (categories and brand mixed), no titles.
            "title": pa.nulls(len(ids), pa.string()),
            "category": pa.nulls(len(ids), pa.string()),
            "brand": pa.nulls(len(ids), pa.string()),
            "price": pa.nulls(len(ids), pa.float64()),
            "attributes": [[f"attr:{a}" for a in item_attrs.get(i, [])] for i in ids],
        },
        schema=CATALOG_SCHEMA,
    )
    return events, catalog
