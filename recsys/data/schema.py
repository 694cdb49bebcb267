"""Canonical schemas every source is converted into before the pipeline reads it."""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 3  # 3: cold_items.parquet and cold_targets/ beside a time split

# `impression`: the item was shown to the user (in a list or a search result) — the negatives and
# positives of CTR ranking. `view`: the user opened the item's page.
EVENT_TYPES = ("impression", "view", "click", "add_to_cart", "purchase", "search")
# Events that must name an item; a search must carry query text instead.
ITEM_EVENT_TYPES = ("impression", "view", "click", "add_to_cart", "purchase")

# One row per user action. `query` is set on search events; `session_id` when the source knows it.
EVENTS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string()),  # null on a search with no click
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("query", pa.string()),
        pa.field("session_id", pa.string()),
    ]
)

CATALOG_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("category", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("attributes", pa.list_(pa.string())),
    ]
)


class SchemaError(ValueError):
    """Input data does not have the canonical columns or types."""
