"""A small synthetic shop, deterministic by seed: catalog, users with latent interests, sessions.

Used by tests and by the demo when ../shared/datasets is absent. Sequences carry real structure a
sequence model can learn: users prefer a few categories, popularity within a category is Zipf-like,
and items have a "goes-with" successor (shampoo → conditioner) that users often click next.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from recsys.config import SyntheticShopConfig
from recsys.data.schema import CATALOG_SCHEMA, EVENTS_SCHEMA

_CATEGORIES = [
    "skincare", "haircare", "makeup", "fragrance", "bath", "nails", "shaving", "suncare",
    "oral care", "tools", "men's grooming", "wellness", "baby care", "eye care", "lip care", "body care",
]
_PRODUCT_TYPES = ["cream", "serum", "gel", "oil", "spray", "balm", "mask", "lotion", "kit", "brush", "wash", "tonic"]
_ADJECTIVES = ["hydrating", "gentle", "matte", "fresh", "repair", "daily", "intense", "light", "organic", "classic"]
_START = datetime(2024, 1, 1, tzinfo=UTC)


def _zipf_weights(n: int, rng: np.random.Generator, a: float = 1.1) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** a
    rng.shuffle(w)
    return w


def generate_shop(cfg: SyntheticShopConfig) -> tuple[pa.Table, pa.Table]:
    """Return (events, catalog) in the canonical schemas."""
    rng = np.random.default_rng(cfg.seed)
    n_cat = min(cfg.num_categories, len(_CATEGORIES))
    brands = [f"brand{b:03d}" for b in range(cfg.num_brands)]

    # Catalog: category, brand, type and adjective compose the title.
    item_cat = rng.integers(0, n_cat, cfg.num_items)
    item_brand = rng.integers(0, cfg.num_brands, cfg.num_items)
    item_type = rng.integers(0, len(_PRODUCT_TYPES), cfg.num_items)
    item_adj = rng.integers(0, len(_ADJECTIVES), cfg.num_items)
    price = np.round(rng.lognormal(3.0, 0.6, cfg.num_items), 2)
    item_ids = [f"sku-{i:06d}" for i in range(cfg.num_items)]
    titles = [
        f"{brands[item_brand[i]].title()} {_ADJECTIVES[item_adj[i]]} {_CATEGORIES[item_cat[i]]} {_PRODUCT_TYPES[item_type[i]]}"
        for i in range(cfg.num_items)
    ]
    catalog = pa.table(
        {
            "item_id": item_ids,
            "title": titles,
            "category": [_CATEGORIES[c] for c in item_cat],
            "brand": [brands[b] for b in item_brand],
            "price": price,
            "attributes": [
                [f"type:{_PRODUCT_TYPES[item_type[i]]}", f"style:{_ADJECTIVES[item_adj[i]]}"] for i in range(cfg.num_items)
            ],
        },
        schema=CATALOG_SCHEMA,
    )

    by_cat = [np.flatnonzero(item_cat == c) for c in range(n_cat)]
    by_cat = [ix if len(ix) else np.arange(cfg.num_items) for ix in by_cat]
    cat_weights = [_zipf_weights(len(ix), rng) for ix in by_cat]
    cat_weights = [w / w.sum() for w in cat_weights]
    # Each item's "goes-with" successor, drawn from its own category.
    successor = np.array([rng.choice(by_cat[item_cat[i]]) for i in range(cfg.num_items)])

    rows: dict[str, list] = {k: [] for k in ("user_id", "item_id", "event_type", "timestamp", "query", "session_id")}

    def emit(user: str, item: int | None, kind: str, t_ms: int, session: str, query: str | None = None) -> None:
        rows["user_id"].append(user)
        rows["item_id"].append(None if item is None else item_ids[item])
        rows["event_type"].append(kind)
        rows["timestamp"].append(t_ms)
        rows["query"].append(query)
        rows["session_id"].append(session)

    start_ms = int(_START.timestamp() * 1000)
    for u in range(cfg.num_users):
        user = f"user-{u:06d}"
        prefs = rng.dirichlet(np.full(n_cat, 0.3))
        n_sessions = 1 + rng.poisson(cfg.mean_sessions_per_user - 1 if cfg.mean_sessions_per_user > 1 else 0)
        days = np.sort(rng.integers(0, 180, n_sessions))
        prev: int | None = None
        for s, day in enumerate(days):
            session = f"{user}-s{s}"
            t = start_ms + int(day) * 86_400_000 + int(rng.integers(8, 22)) * 3_600_000
            c = rng.choice(n_cat, p=prefs)
            if rng.random() < 0.3:  # a keyword search opens the session
                target = rng.choice(by_cat[c], p=cat_weights[c])
                words = titles[target].lower().split()[1:]
                emit(user, None, "search", t, session, " ".join(rng.choice(words, size=min(2, len(words)), replace=False)))
                t += 5_000
            for _ in range(1 + rng.poisson(2.0)):
                for v in rng.choice(by_cat[c], size=2, p=cat_weights[c]):  # impressions the user saw
                    emit(user, int(v), "view", t, session)
                    t += 2_000
                if prev is not None and rng.random() < 0.6:
                    item = int(successor[prev])
                else:
                    item = int(rng.choice(by_cat[c], p=cat_weights[c]))
                emit(user, item, "click", t, session)
                t += int(rng.integers(10, 120)) * 1_000
                if rng.random() < 0.25:
                    emit(user, item, "add_to_cart", t, session)
                    t += 30_000
                    if rng.random() < 0.6:
                        emit(user, item, "purchase", t, session)
                        t += 60_000
                prev = item
    events = pa.table(
        {**rows, "timestamp": pa.array(rows["timestamp"], pa.timestamp("ms", tz="UTC"))}, schema=EVENTS_SCHEMA
    )
    return events, catalog
