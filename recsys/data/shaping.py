"""Per-user shaping: deduplicate, sessionize, and build time-ordered sequences.

These functions run on blocks that hold *every* event of their users (the pipeline repartitions
by `user_id` first), so a user's history is never split between workers. All work is vectorised
over the block: rows are sorted by (user, time) once and then compared with their predecessor.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Within equal timestamps, the funnel order: seen → opened → clicked → carted → bought.
_EVENT_ORDER = pa.array(["search", "impression", "view", "click", "add_to_cart", "purchase"])


def _same_as_previous(col: pa.Array) -> np.ndarray:
    """row i equals row i-1 (nulls equal nulls); row 0 is False."""
    n = len(col)
    out = np.zeros(n, dtype=bool)
    if n > 1 and pa.types.is_null(col.type):
        out[1:] = True
    elif n > 1:
        a, b = col.slice(1), col.slice(0, n - 1)
        eq = pc.fill_null(pc.equal(a, b), False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        out[1:] = pc.or_(eq, both_null).to_numpy(zero_copy_only=False)
    return out


def compact_events(batch: pa.Table, catalog_ids: pa.Array) -> pa.Table:
    """Canonical rows → the shuffle payload: catalog positions and funnel codes instead of strings.

    Half the bytes through the hash shuffle, and integer sort keys after it.
    """
    ts = batch["timestamp"]
    return pa.table({
        "user_id": batch["user_id"],
        "item_c": pc.index_in(batch["item_id"], value_set=catalog_ids).cast(pa.int32()),
        "kind": pc.index_in(batch["event_type"], value_set=_EVENT_ORDER).cast(pa.int8()),
        "timestamp": ts.cast(pa.int64()) if pa.types.is_timestamp(ts.type) else ts,
        "query": batch["query"],
        "session_id": batch["session_id"],
    })


def annotate_user_events(block: pa.Table, gap_ms: int, catalog_ids: pa.Array, to_vocab: np.ndarray | None = None) -> pa.Table:
    """Sort a compacted block by (user, time); restore ids; add `item` (vocab index), `session`, `duplicate`.

    `item` is 1-based in the vocabulary: the catalog itself when `to_vocab` is None, else
    `to_vocab[catalog position]` (0 = not in the vocabulary → null). `session` counts from 0 per
    user; a new one starts after more than `gap_ms` of inactivity. `duplicate` marks a repeat of an
    earlier row with the same user, item, type, time and query.
    """
    block = block.sort_by([("user_id", "ascending"), ("timestamp", "ascending"), ("kind", "ascending"),
                           ("item_c", "ascending"), ("query", "ascending")]).combine_chunks()
    new_user = ~_same_as_previous(block["user_id"].combine_chunks())
    duplicate = ~new_user
    for c in ("item_c", "kind", "timestamp", "query"):
        duplicate &= _same_as_previous(block[c].combine_chunks())
    t = block["timestamp"].to_numpy()
    gap = np.zeros(len(t), dtype=bool)
    gap[1:] = (t[1:] - t[:-1]) > gap_ms
    starts = new_user | gap
    # Session number within the user: cumulative starts minus the count at the user's first row.
    cum = np.cumsum(starts)
    user_first = np.maximum.accumulate(np.where(new_user, np.arange(len(t)), 0))
    session = (cum - cum[user_first]).astype(np.int32)
    item_c = block["item_c"].combine_chunks()
    if to_vocab is None:
        item = pc.add(item_c, 1)
    else:
        mapped = to_vocab[item_c.fill_null(0).to_numpy()]
        item = pa.array(mapped, pa.int32(), mask=(mapped == 0) | item_c.is_null().to_numpy(zero_copy_only=False))
    return pa.table({
        "user_id": block["user_id"],
        "item_id": catalog_ids.take(item_c),
        "event_type": _EVENT_ORDER.take(block["kind"]),
        "timestamp": block["timestamp"],
        "query": block["query"],
        "session_id": block["session_id"],
        "item": item,
        "session": pa.array(session),
        "duplicate": pa.array(duplicate),
    })


def interactions_of(annotated: pa.Table, kinds: list[str]) -> pa.Table:
    """The rows that enter sequences: interaction events on known items, duplicates removed."""
    keep = pc.and_(
        pc.and_(pc.invert(annotated["duplicate"]), pc.is_in(annotated["event_type"], value_set=pa.array(kinds))),
        pc.is_valid(annotated["item"]),
    )
    return annotated.filter(keep).select(["user_id", "item", "timestamp", "session"])


def build_sequences(annotated: pa.Table, kinds: list[str], collapse_repeats: bool) -> pa.Table:
    """One row per user: `items`, `timestamps` (ms) and `sessions`, oldest first, from an annotated block.

    With `collapse_repeats`, consecutive interactions with the same item (click → cart → buy) are one
    step, stamped with the time of the first.
    """
    rows = interactions_of(annotated, kinds)
    empty = pa.table({"user_id": pa.array([], pa.string()), "items": pa.array([], pa.list_(pa.int32())),
                      "timestamps": pa.array([], pa.list_(pa.int64())), "sessions": pa.array([], pa.list_(pa.int32()))})
    if rows.num_rows == 0:
        return empty
    users = rows["user_id"].combine_chunks()
    items = rows["item"].to_numpy()
    new_user = ~_same_as_previous(users)
    keep = np.ones(len(items), dtype=bool)
    if collapse_repeats:
        keep[1:] = new_user[1:] | (items[1:] != items[:-1])
    starts = np.flatnonzero(new_user[keep])
    offsets = pa.array(np.append(starts, keep.sum()).astype(np.int32))
    mask = pa.array(keep)
    return pa.table(
        {
            "user_id": users.filter(mask).take(pa.array(starts)),
            "items": pa.ListArray.from_arrays(offsets, pa.array(items[keep], pa.int32())),
            "timestamps": pa.ListArray.from_arrays(offsets, rows["timestamp"].combine_chunks().filter(mask)),
            "sessions": pa.ListArray.from_arrays(offsets, rows["session"].combine_chunks().filter(mask)),
        }
    )
