"""Training examples beyond sequences: CTR impressions and (query, clicked item) search pairs.

Masked-item and next-item examples are cut from the `train` split at batch time
(`recsys/train/batches.py`). The two kinds here are materialised, one row per example, with the
user's history as a *prefix length* into their row of `sequences` (history = items[:history_len]),
so a 10M-event log does not copy a history per impression. The prefix holds only interactions
strictly before the example, and every example is assigned to train/valid/test by the time its
label became known (the click), against the same per-user cuts as the sequence splits: a training
example never contains an evaluation-side event.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.shaping import build_sequences
from recsys.data.splits import split_of, user_cuts

CLICK_WINDOW_MS = 10 * 60_000  # a click counts for an impression only if it comes this soon after

CTR_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("candidate", pa.int32()), ("label", pa.int8()), ("history_len", pa.int32()),
    ("hour", pa.int8()), ("weekday", pa.int8()), ("session_position", pa.int32()), ("timestamp", pa.int64()),
    ("split", pa.string()),
])
SEARCH_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("query", pa.string()), ("item", pa.int32()), ("purchased", pa.bool_()),
    ("history_len", pa.int32()), ("timestamp", pa.int64()), ("split", pa.string()),
])


def _history_len(seqs: pa.Table, rows: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """How many of the user's sequence items happened strictly before each event (vectorised)."""
    stamps = seqs["timestamps"].combine_chunks()
    offsets = stamps.offsets.to_numpy().astype(np.int64)
    flat = stamps.values.to_numpy()
    if len(rows) == 0 or len(flat) == 0:
        return np.zeros(len(rows), np.int32)
    # Pack (row, time since the block's first event) into one sorted int64 key: rows are ascending and
    # times ascending within a row, so one searchsorted answers every user at once (40 bits of
    # milliseconds: a block may span 34 years).
    base = min(int(flat.min()), int(ts.min()))
    flat_rows = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    keys = (flat_rows << 40) | (flat - base)
    queries = (rows.astype(np.int64) << 40) | (ts - base)
    return (np.searchsorted(keys, queries, side="left") - offsets[rows]).astype(np.int32)


def _sequences_and_cuts(annotated: pa.Table, kinds: list[str], collapse_repeats: bool, mode: str, min_len: int,
             valid_cut: int, test_cut: int) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    seqs = build_sequences(annotated, kinds, collapse_repeats)
    vcut, tcut = user_cuts(seqs, mode, min_len, valid_cut, test_cut)
    return seqs, vcut, tcut


def _rows_for(events: pa.Table, seqs: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """Keep events whose user has a sequence; their row in `seqs`."""
    idx = pc.index_in(events["user_id"], value_set=seqs["user_id"].combine_chunks())
    events = events.filter(pc.is_valid(idx))
    return events, pc.drop_null(idx).to_numpy(zero_copy_only=False).astype(np.int64)


def _next_click(annotated: pa.Table, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row index, the next click row by the same user in the same session (and a found-mask).

    Rows are sorted by (user, time), so the next click is one searchsorted away.
    """
    live = pc.invert(annotated["duplicate"]).to_numpy(zero_copy_only=False)
    is_click = (live & pc.equal(annotated["event_type"], "click").to_numpy(zero_copy_only=False)
                & pc.is_valid(annotated["item"]).to_numpy(zero_copy_only=False))
    clicks = np.flatnonzero(is_click)
    if len(clicks) == 0 or len(rows) == 0:
        return np.zeros(len(rows), np.int64), np.zeros(len(rows), bool)
    pos = np.searchsorted(clicks, rows, side="right")
    found = pos < len(clicks)
    nxt = clicks[np.minimum(pos, len(clicks) - 1)]
    users = annotated["user_id"].combine_chunks()
    sess = annotated["session"].to_numpy()
    same = pc.equal(users.take(pa.array(rows)), users.take(pa.array(nxt))).to_numpy(zero_copy_only=False)
    return nxt, found & same & (sess[rows] == sess[nxt])


def ctr_examples(annotated: pa.Table, kinds: list[str], collapse_repeats: bool, mode: str, min_len: int,
                 valid_cut: int, test_cut: int) -> pa.Table:
    """One row per impression of a known item. Label 1 when the user's next click in the same session,
    within CLICK_WINDOW_MS, is on that item (the list the user saw, then what they picked from it)."""
    seqs, vcut, tcut = _sequences_and_cuts(annotated, kinds, collapse_repeats, mode, min_len, valid_cut, test_cut)
    live = pc.and_(pc.invert(annotated["duplicate"]), pc.is_valid(annotated["item"]))
    is_imp = pc.and_(live, pc.equal(annotated["event_type"], "impression")).to_numpy(zero_copy_only=False)
    imp_rows = np.flatnonzero(is_imp)
    nxt, found = _next_click(annotated, imp_rows)
    ts = annotated["timestamp"].to_numpy()
    item = annotated["item"].to_numpy(zero_copy_only=False)
    clicked = found & (item[nxt] == item[imp_rows]) & (ts[nxt] - ts[imp_rows] <= CLICK_WINDOW_MS)
    imps = annotated.take(pa.array(imp_rows)).append_column("_label", pa.array(clicked)).append_column(
        "_label_ts", pa.array(np.where(clicked, ts[nxt], ts[imp_rows])))
    imps, rows = _rows_for(imps, seqs)
    if imps.num_rows == 0:
        return CTR_SCHEMA.empty_table()
    its = imps["timestamp"].to_numpy()
    stamps = pa.array(its, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    return pa.table(
        {
            "user_id": imps["user_id"],
            "candidate": imps["item"],
            "label": imps["_label"].cast(pa.int8()),
            "history_len": pa.array(_history_len(seqs, rows, its)),
            "hour": pc.hour(stamps).cast(pa.int8()),
            "weekday": pc.day_of_week(stamps).cast(pa.int8()),
            "session_position": _session_position(imps),
            "timestamp": pa.array(its, pa.int64()),
            # Split by when the label became known (the click), so no train label reveals an eval event.
            "split": split_of(imps["_label_ts"].to_numpy(), vcut[rows], tcut[rows]),
        },
        schema=CTR_SCHEMA,
    )


def _session_position(imps: pa.Table) -> pa.Array:
    """How many impressions of the same session came before this one (0 = first shown)."""
    users = imps["user_id"].combine_chunks()
    sess = imps["session"].to_numpy()
    n = len(sess)
    new = np.ones(n, bool)
    if n > 1:
        same_user = pc.equal(users.slice(1), users.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        new[1:] = ~(same_user & (sess[1:] == sess[:-1]))
    idx = np.arange(n)
    start = np.maximum.accumulate(np.where(new, idx, 0))
    return pa.array((idx - start).astype(np.int32))


def search_pairs(annotated: pa.Table, kinds: list[str], collapse_repeats: bool, mode: str, min_len: int,
                 valid_cut: int, test_cut: int) -> pa.Table:
    """(query, first item clicked after it in the same session); `purchased` when that item was bought there."""
    seqs, vcut, tcut = _sequences_and_cuts(annotated, kinds, collapse_repeats, mode, min_len, valid_cut, test_cut)
    live = pc.invert(annotated["duplicate"]).to_numpy(zero_copy_only=False)
    is_search = live & pc.equal(annotated["event_type"], "search").to_numpy(zero_copy_only=False)
    searches = np.flatnonzero(is_search)
    target, found = _next_click(annotated, searches)
    searches, target = searches[found], target[found]
    if len(searches) == 0:
        return SEARCH_SCHEMA.empty_table()
    pairs = annotated.take(pa.array(searches))
    clicked = annotated.take(pa.array(target))
    pairs, rows = _rows_for(pairs.append_column("_item", clicked["item"]).append_column("_t", clicked["timestamp"]), seqs)
    if pairs.num_rows == 0:
        return SEARCH_SCHEMA.empty_table()
    buys = annotated.filter(pc.and_(pc.equal(annotated["event_type"], "purchase"), pc.is_valid(annotated["item"])))
    buy_keys = pc.binary_join_element_wise(buys["user_id"], buys["session"].cast(pa.string()), buys["item"].cast(pa.string()), "|")
    pair_keys = pc.binary_join_element_wise(pairs["user_id"], pairs["session"].cast(pa.string()), pairs["_item"].cast(pa.string()), "|")
    click_ts = pairs["_t"].to_numpy()
    return pa.table(
        {
            "user_id": pairs["user_id"],
            "query": pairs["query"],
            "item": pairs["_item"],
            "purchased": pc.is_in(pair_keys, value_set=buy_keys),
            "history_len": pa.array(_history_len(seqs, rows, pairs["timestamp"].to_numpy())),
            "timestamp": pairs["timestamp"],
            "split": split_of(click_ts, vcut[rows], tcut[rows]),
        },
        schema=SEARCH_SCHEMA,
    )
