"""Row-level validation of raw events: typed good rows out, every bad row quarantined with a reason.

`validate_events` runs per Ray Data batch. It never raises on bad data: each row gets the first
reason code (in the order of `REASONS`) it fails, or none. Good rows come out in the canonical
schema (ids as strings, timestamps as UTC milliseconds); bad rows keep their raw values as text
plus the reason and the source file, so nothing is lost and everything can be fixed and replayed.
Duplicate events are found later, once a user's events are in one block (`shaping.py`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.config import ValidationConfig
from recsys.data.schema import EVENT_TYPES, EVENTS_SCHEMA, ITEM_EVENT_TYPES

# Reason code → what is wrong and how to fix it. Checked in this order; a row gets the first match.
REASONS = {
    "malformed_record": "the line is not a JSON object / has the wrong number of CSV fields",
    "missing_user_id": "user_id is empty",
    "missing_event_type": "event_type is empty",
    "missing_timestamp": "timestamp is empty",
    "bad_timestamp": "timestamp is neither ISO 8601 text nor a number in data.validation.numeric_timestamp_unit",
    "unknown_event_type": f"event_type is not one of {', '.join(EVENT_TYPES)}",
    "bad_user_id": "user_id does not match data.validation.id_pattern",
    "missing_item_id": f"{'/'.join(ITEM_EVENT_TYPES)} events must name an item_id",
    "bad_item_id": "item_id does not match data.validation.id_pattern",
    "missing_query": "search events must carry query text",
    "timestamp_out_of_range": "timestamp is outside [data.validation.min_timestamp, max_timestamp]",
    "unknown_item": "item_id is not in the catalog",
    "duplicate_event": "the same user, item, event type, timestamp and query occurred earlier",
}

QUARANTINE_SCHEMA = pa.schema(
    [pa.field(f.name, pa.string()) for f in EVENTS_SCHEMA]
    + [pa.field("_record", pa.string()), pa.field("_source", pa.string()), pa.field("reason", pa.string())]
)


class QuarantineThresholdExceeded(ValueError):
    """Too large a share of the input failed validation; the pipeline stops before training on it."""


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def timestamp_bounds(cfg: ValidationConfig) -> tuple[int, int]:
    upper = _ms(cfg.max_timestamp) if cfg.max_timestamp else int(time.time() * 1000) + 86_400_000
    return _ms(cfg.min_timestamp), upper


def _text(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Any scalar column as trimmed text; empty → null."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    if pa.types.is_floating(col.type):  # 12.0 → "12" for ids written as floats by pandas
        whole = pc.equal(col, pc.floor(col))
        col = pc.if_else(whole, col.cast(pa.int64(), safe=False).cast(pa.string()), col.cast(pa.string()))
    text = pc.utf8_trim_whitespace(col.cast(pa.string()))
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _blank(col: pa.Array) -> pa.Array:
    """Null, or empty text. Only text columns are trimmed: a timestamp column is never turned into text."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return pc.fill_null(pc.equal(pc.utf8_trim_whitespace(col), ""), True)
    return pc.is_null(col)


def parse_timestamps(col: pa.ChunkedArray | pa.Array, unit: str) -> pa.Array:
    """Timestamps of any input type → int64 UTC milliseconds; null where unparsable."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    scale = 1000 if unit == "s" else 1
    if pa.types.is_timestamp(col.type):
        if col.type.tz is None:
            col = pc.assume_timezone(col, "UTC")
        return col.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return pc.multiply(col.cast(pa.float64()), float(scale)).cast(pa.int64(), safe=False)
    text = _text(col)
    out = np.full(len(text), np.iinfo(np.int64).min, dtype=np.int64)
    values = text.to_pylist()
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            out[i] = int(float(v) * scale) if v.lstrip("-").replace(".", "", 1).isdigit() else _iso_ms(v)
        except (ValueError, OverflowError):
            pass
    return pa.array(out, mask=out == np.iinfo(np.int64).min)


def _iso_ms(text: str) -> int:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return _ms(dt if dt.tzinfo else dt.replace(tzinfo=UTC))  # naive times are UTC


def validate_events(batch: pa.Table, cfg: dict, item_ids: pa.Array) -> pa.Table:
    """Raw batch → canonical columns + `reason` (null for good rows) + raw text for quarantine.

    `cfg` is `ValidationConfig.model_dump()` (plain data travels to Ray workers cheaply).
    """
    vcfg = ValidationConfig.model_validate(cfg)
    lo, hi = timestamp_bounds(vcfg)
    n = batch.num_rows
    user, item, kind = _text(batch["user_id"]), _text(batch["item_id"]), _text(batch["event_type"])
    kind = pc.utf8_lower(kind)
    query, session = _text(batch["query"]), _text(batch["session_id"])
    raw_ts = batch["timestamp"].combine_chunks()
    ts = parse_timestamps(raw_ts, vcfg.numeric_timestamp_unit)

    malformed = pc.is_valid(batch["_record"])
    needs_item = pc.is_in(kind, value_set=pa.array(ITEM_EVENT_TYPES))
    has_item = pc.is_valid(item)
    id_ok = lambda col: pc.fill_null(pc.match_substring_regex(col, vcfg.id_pattern), False)  # noqa: E731
    rules = [
        ("malformed_record", malformed),
        ("missing_user_id", pc.is_null(user)),
        ("missing_event_type", pc.is_null(kind)),
        ("missing_timestamp", _blank(raw_ts)),
        ("bad_timestamp", pc.is_null(ts)),
        ("unknown_event_type", pc.invert(pc.is_in(kind, value_set=pa.array(EVENT_TYPES)))),
        ("bad_user_id", pc.invert(id_ok(user))),
        ("missing_item_id", pc.and_(needs_item, pc.invert(has_item))),
        ("bad_item_id", pc.and_(has_item, pc.invert(id_ok(item)))),
        ("missing_query", pc.and_(pc.equal(kind, "search"), pc.is_null(query))),
        ("timestamp_out_of_range", pc.or_(pc.less(ts, lo), pc.greater(ts, hi))),
        ("unknown_item", pc.and_(has_item, pc.invert(pc.is_in(item, value_set=item_ids)))),
    ]
    reason = pa.nulls(n, pa.string())
    for code, failed in reversed(rules):  # the earliest rule wins
        reason = pc.if_else(pc.fill_null(failed, True), pa.scalar(code), reason)

    out = {
        "user_id": user,
        "item_id": item,
        "event_type": kind,
        "timestamp": pc.fill_null(ts, 0),
        "query": query,
        "session_id": session,
        "reason": reason,
    }
    # Raw text for the quarantine, filled in on bad rows only (casting 10M timestamps to text is not free).
    bad = pc.is_valid(reason)
    bad = bad.combine_chunks() if isinstance(bad, pa.ChunkedArray) else bad
    for c in ("user_id", "item_id", "event_type", "timestamp", "query", "session_id"):
        col = batch[c].combine_chunks()
        text = pa.nulls(0, pa.string()) if pa.types.is_null(col.type) else col.filter(bad).cast(pa.string())
        full = pa.nulls(n, pa.string())
        out[f"raw_{c}"] = pc.replace_with_mask(full, bad, text) if len(text) else full
    out["_record"] = batch["_record"]
    source = batch["_source"].combine_chunks().filter(bad).cast(pa.string())
    out["_source"] = pc.replace_with_mask(pa.nulls(n, pa.string()), bad, source) if len(source) else pa.nulls(n, pa.string())
    return pa.table(out)


def good_rows(batch: pa.Table) -> pa.Table:
    """Validated rows in the canonical events schema."""
    good = batch.filter(pc.is_null(batch["reason"]))
    return pa.table(
        {
            "user_id": good["user_id"],
            "item_id": good["item_id"],
            "event_type": good["event_type"],
            "timestamp": good["timestamp"].cast(pa.timestamp("ms", tz="UTC")),
            "query": good["query"],
            "session_id": good["session_id"],
        },
        schema=EVENTS_SCHEMA,
    )


def quarantined_rows(batch: pa.Table) -> pa.Table:
    """Bad rows with their original values as text, the reason and the file they came from."""
    bad = batch.filter(pc.is_valid(batch["reason"]))
    cols = {f.name: bad[f"raw_{f.name}"] for f in EVENTS_SCHEMA}
    return pa.table({**cols, "_record": bad["_record"], "_source": bad["_source"], "reason": bad["reason"]}, schema=QUARANTINE_SCHEMA)


def check_quarantine(counts: dict[str, int], rows_read: int, max_fraction: float, quarantine_path: str) -> None:
    """Fail when the quarantined share exceeds the threshold, naming it and the top reasons."""
    total = sum(counts.values())
    if rows_read == 0 or total / rows_read <= max_fraction:
        return
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    reasons = "; ".join(f"{code}: {n} rows ({REASONS[code]})" for code, n in top if n)
    raise QuarantineThresholdExceeded(
        f"{total} of {rows_read} events ({total / rows_read:.1%}) failed validation, more than "
        f"data.validation.max_quarantine_fraction={max_fraction}. Top reasons: {reasons}. "
        f"The rows are in {quarantine_path}; fix the input or raise the threshold."
    )
