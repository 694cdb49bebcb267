"""Cold targets of a time split: products the training period never saw, kept for evaluation.

Under a global time cut the vocabulary holds only the items sold before `valid_cut`, so a product
launched later is not an input the model knows. It is still a product a shop wants recommended,
from its text and attributes (an item vector without the trained id part: `ItemEmbedding.content`).
The prepared dataset therefore keeps two things beside the splits:

    cold_items.parquet  the catalog rows outside the vocabulary, `item_index` N + 2 + k (k = 0..M-1
                        in id order: after padding 0, the items 1..N and [MASK] N + 1), their
                        attributes mapped through the training attribute vocabulary (unknown ones
                        dropped: nothing was learned about them)
    cold_targets/       per user and split, the first interaction in the split's window with a cold
                        item: `history` (known items before the cut, as in the split's own rows) →
                        `target` (the cold item's extended index)

The split tables keep their known-item targets unchanged (first known item in the window), so a
user may have one known and one cold target in a split: "all targets" is the union of both rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.catalog import attribute_names
from recsys.data.shaping import build_sequences

COLD_TARGETS_SCHEMA = pa.schema([
    pa.field("user_id", pa.string()), pa.field("split", pa.string()), pa.field("history", pa.list_(pa.int32())),
    pa.field("target", pa.int32()), pa.field("target_id", pa.string()), pa.field("timestamp", pa.int64()),
])


def cold_item_table(catalog: pa.Table, vocab: pa.Array, attributes: pa.Table) -> pa.Table:
    """The catalog rows outside `vocab` (a `unique_catalog`, sorted by id) with extended indices and
    known attribute indices."""
    cold = catalog.filter(pc.invert(pc.is_in(catalog["item_id"], value_set=vocab)))
    known = dict(zip(attributes["attribute"].to_pylist(), attributes["attribute_index"].to_pylist(), strict=True))
    rows = cold.to_pylist()
    first = len(vocab) + 2
    attrs = [[known[a] for a in attribute_names(r.get("category"), r.get("brand"), r.get("attributes")) if a in known]
             for r in rows]
    return (cold.append_column("item_index", pa.array(np.arange(first, first + len(rows)), pa.int32()))
            .append_column("attribute_indices", pa.array(attrs, pa.list_(pa.int32()))))


def cold_targets(block: pa.Table, kinds: list[str], collapse_repeats: bool, valid_cut: int, test_cut: int,
                 max_len: int, cold_ids: pa.Array, num_items: int) -> pa.Table:
    """Cold rows of one whole-user block of annotated events (see the module docstring)."""
    live = pc.and_(pc.invert(block["duplicate"]), pc.is_in(block["event_type"], value_set=pa.array(kinds)))
    cold = block.filter(pc.and_(live, pc.is_in(block["item_id"], value_set=cold_ids)))
    if cold.num_rows == 0:
        return COLD_TARGETS_SCHEMA.empty_table()
    seqs = build_sequences(block, kinds, collapse_repeats).to_pydict()
    known = {u: (np.asarray(i, np.int64), np.asarray(t, np.int64))
             for u, i, t in zip(seqs["user_id"], seqs["items"], seqs["timestamps"], strict=True)}
    cold = cold.sort_by([("user_id", "ascending"), ("timestamp", "ascending"), ("item_id", "ascending")])
    extended = pc.add(pc.index_in(cold["item_id"], value_set=cold_ids), num_items + 2).to_numpy()
    out: dict[str, list] = {name: [] for name in COLD_TARGETS_SCHEMA.names}
    windows = (("valid", valid_cut, test_cut), ("test", test_cut, np.iinfo(np.int64).max))
    seen: set[tuple[str, str]] = set()
    for user, item_id, t, target in zip(cold["user_id"].to_pylist(), cold["item_id"].to_pylist(),
                                        cold["timestamp"].to_numpy(), extended, strict=True):
        for split, start, end in windows:
            if not start <= t < end or (user, split) in seen:
                continue
            seen.add((user, split))  # the first cold interaction in the window, as the split takes the first known one
            items, stamps = known.get(user, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
            history = items[stamps < start][-max_len:]
            if len(history):  # like the split's rows: a user with no history has nothing to condition on
                for name, value in zip(COLD_TARGETS_SCHEMA.names, (user, split, history.tolist(), int(target), item_id, int(t)),
                                       strict=True):
                    out[name].append(value)
    return pa.table(out, schema=COLD_TARGETS_SCHEMA)
