"""The item vocabulary: catalog rows → item indices 1..N and attribute indices 1..A."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def unique_catalog(catalog: pa.Table) -> tuple[pa.Table, int]:
    """Catalog rows (as `read_catalog` returns them) sorted by item id, the first row of each id kept;
    and how many rows were dropped."""
    n_rows = catalog.num_rows
    catalog = catalog.filter(pc.is_valid(catalog["item_id"])).sort_by("item_id")
    ids = catalog["item_id"].combine_chunks()
    first = np.ones(len(ids), dtype=bool)
    if len(ids) > 1:
        first[1:] = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    catalog = catalog.filter(pa.array(first))
    return catalog, n_rows - catalog.num_rows


def attribute_names(category: str | None, brand: str | None, attributes) -> list[str]:
    """An item's attributes as the models see them: category and brand beside the listed ones."""
    extra = [f"category:{category}"] if category else []
    extra += [f"brand:{brand}"] if brand else []
    return extra + list(attributes if attributes is not None else [])


def item_table(catalog: pa.Table, vocab: pa.Array | None = None) -> tuple[pa.Table, pa.Table]:
    """(items, attributes) from a `unique_catalog`.

    Items are numbered from 1 in id order; with `vocab` (sorted ids) only those items are kept, so
    index i+1 is vocab[i]. Category and brand become attributes beside the listed ones.
    """
    if vocab is not None:
        catalog = catalog.filter(pc.is_in(catalog["item_id"], value_set=vocab))
        if catalog.num_rows != len(vocab):
            raise RuntimeError(f"{len(vocab) - catalog.num_rows} vocabulary items are missing from the catalog")

    rows = catalog.to_pylist()
    item_attrs = [attribute_names(r.get("category"), r.get("brand"), r.get("attributes")) for r in rows]
    names = sorted({a for attrs in item_attrs for a in attrs})
    attr_index = {a: i + 1 for i, a in enumerate(names)}
    items = catalog.append_column("item_index", pa.array(np.arange(1, len(rows) + 1), pa.int32()))
    items = items.append_column(
        "attribute_indices", pa.array([[attr_index[a] for a in attrs] for attrs in item_attrs], pa.list_(pa.int32()))
    )
    attributes = pa.table({"attribute_index": pa.array(np.arange(1, len(names) + 1), pa.int32()), "attribute": names})
    return items, attributes
