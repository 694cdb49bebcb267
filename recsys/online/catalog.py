"""The served catalog: item fields as responses show them, filter arrays, popularity, and what the
logs know about users (histories, purchases). Item indices run 1..N (the models' vocabulary), then
N+1.. for items added while serving."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

CATALOG_FIELDS = ["item_id", "title", "category", "brand", "price"]


class VersionCheckError(RuntimeError):
    """A version failed its load-time checks (recall, smoke query); it is never switched to."""


@dataclass
class Filters:
    """What a request may return: categories, brands, a price range; purchased items out."""

    categories: list[str] | None = None
    price_min: float | None = None
    price_max: float | None = None
    exclude_purchased: bool = False
    brands: list[str] | None = None

    @property
    def empty(self) -> bool:
        return self.categories is None and self.brands is None and self.price_min is None and self.price_max is None


class Catalog:
    def __init__(self, items) -> None:
        """From items.parquet's table (item_index 1..N): missing values None, never NaN."""
        rows = items.sort_by("item_index").select(["item_index", *CATALOG_FIELDS, "attributes", "train_count"]).to_pylist()
        if [r["item_index"] for r in rows] != list(range(1, len(rows) + 1)):
            raise VersionCheckError("items.parquet item_index must run 1..N without gaps")
        self.rows = {r["item_index"]: r for r in rows}
        self.index_of = {r["item_id"]: r["item_index"] for r in rows}
        self.categories = np.asarray([r["category"] or "" for r in rows], dtype=object)
        self.brands = np.asarray([r["brand"] or "" for r in rows], dtype=object)
        self.prices = np.asarray([np.nan if r["price"] is None else r["price"] for r in rows], dtype=np.float64)
        counts = np.asarray([r["train_count"] for r in rows], dtype=np.int64)
        self.popular = (np.argsort(-counts, kind="stable") + 1).tolist()  # item indices, most trained-on first
        self.histories: dict[str, list[int]] = {}
        self.purchased: dict[str, set[int]] = {}
        self.attribute_index: dict[str, int] = {}
        self.attribute_name: dict[int, str] = {}

    @classmethod
    def load(cls, dataset: Path) -> Catalog:
        """A prepared dataset's catalog, attribute vocabulary, histories and purchases."""
        catalog = cls(pq.read_table(dataset / "items.parquet"))
        vocab = pq.read_table(dataset / "attributes.parquet").to_pydict()
        catalog.attribute_index = dict(zip(vocab["attribute"], vocab["attribute_index"], strict=True))  # name → index the models know
        catalog.attribute_name = {i: a for a, i in catalog.attribute_index.items()}
        seqs = pq.read_table(dataset / "sequences", columns=["user_id", "items"]).to_pydict()
        catalog.histories = dict(zip(seqs["user_id"], seqs["items"], strict=True))
        if (dataset / "events").exists():
            ev = pq.read_table(dataset / "events", columns=["user_id", "item_id", "event_type"])
            ev = ev.filter(pc.equal(ev["event_type"], "purchase"))
            for user, item in zip(ev["user_id"].to_pylist(), ev["item_id"].to_pylist(), strict=True):
                if item in catalog.index_of:
                    catalog.purchased.setdefault(user, set()).add(catalog.index_of[item])
        return catalog

    def __len__(self) -> int:
        return len(self.rows)

    def item(self, index: int) -> dict:
        """The fields a response shows for an item."""
        return {k: self.rows[index][k] for k in CATALOG_FIELDS}

    def train_count(self, index: int) -> int:
        return self.rows[index]["train_count"]

    def indices(self, ids: list[str]) -> tuple[list[int], list[str]]:
        """(item indices of the known ids, `field[i]=id` of the unknown ones)."""
        unknown = [f"[{i}]={x!r}" for i, x in enumerate(ids) if x not in self.index_of]
        return [self.index_of[x] for x in ids if x in self.index_of], unknown

    def known_attributes(self, names: list[str]) -> list[int]:
        return [self.attribute_index[a] for a in names if a in self.attribute_index]

    def add(self, item: dict, attribute_indices: list[int]) -> int:
        """Append a new item (POST /items); returns its index."""
        index = len(self.rows) + 1
        self.rows[index] = {"item_index": index, **{k: item.get(k) for k in CATALOG_FIELDS},
                            "attributes": list(item.get("attributes") or []), "attribute_indices": attribute_indices, "train_count": 0}
        self.index_of[item["item_id"]] = index
        self.categories = np.append(self.categories, item.get("category") or "")
        self.brands = np.append(self.brands, item.get("brand") or "")
        self.prices = np.append(self.prices, np.nan if item.get("price") is None else item["price"])
        self.popular.append(index)
        return index

    def allowed(self, filters: Filters | None, exclude: set[int]) -> np.ndarray | None:
        """(N,) bool of items a request may return, or None when nothing is filtered."""
        if not exclude and (filters is None or filters.empty):
            return None
        mask = np.ones(len(self.rows), dtype=bool)
        if filters is not None:
            if filters.categories is not None:
                mask &= np.isin(self.categories, filters.categories)
            if filters.brands is not None:
                mask &= np.isin(self.brands, filters.brands)
            if filters.price_min is not None:
                mask &= self.prices >= filters.price_min  # NaN prices never pass a price filter
            if filters.price_max is not None:
                mask &= self.prices <= filters.price_max
        if exclude:
            mask[np.fromiter(exclude, dtype=np.int64, count=len(exclude)) - 1] = False
        return mask

    def popular_items(self, k: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        """(item index, train count) of the k most trained-on allowed items."""
        picked = [i for i in self.popular if allowed is None or allowed[i - 1]][:k]
        return [(i, float(self.rows[i]["train_count"])) for i in picked]
