import math

import pyarrow as pa

from serving.recommender import catalog_fields
from serving.schemas import RecommendedItem


def test_catalog_without_titles_or_prices_serialises():
    """Amazon Beauty has no titles, categories, brands or prices: they must come out as null."""
    items = pa.table({
        "item_id": ["a", "b"], "title": pa.array([None, "Gel"], pa.string()), "category": pa.nulls(2, pa.string()),
        "brand": pa.nulls(2, pa.string()), "price": pa.array([None, 9.5], pa.float64()),
        "attributes": [["x"], []], "item_index": pa.array([1, 2], pa.int32()),
    })
    fields = catalog_fields(items)
    assert fields[1] == {"item_id": "a", "title": None, "category": None, "brand": None, "price": None}
    item = RecommendedItem(score=1.0, **fields[2])
    assert item.title == "Gel" and math.isclose(item.price, 9.5)
    RecommendedItem(score=0.5, **fields[1])  # no validation error on missing fields
