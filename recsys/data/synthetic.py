"""The synthetic shop: a deterministic (by seed) e-commerce world, vectorised to reach 10M events in minutes.

World:
- a catalog whose titles compose brand, style, category and product type; prices (log-normal) and
  attributes; popularity within each category is Zipf-like;
- users with latent interests (a Dirichlet mix over categories);
- traffic with a weekly rhythm, a slow seasonal wave and a few sale days (daily sales per item follow);
- optionally (`launch_share`, `trend_strength`; off by default, so the default shop is unchanged)
  product launches during the period and per-product rising or falling popularity: what demand
  forecasting (recsys.forecast) must handle;
- sessions: sometimes a keyword search first (query text made from the wanted item's title, with
  synonyms and typos, so exact word matching is not enough); then steps where the user sees 4
  impressions and clicks at most one; a click may lead to add-to-cart and purchase.
- structure a model can learn: the first impression of a step is often the "goes-with" successor of
  the user's previous click (shampoo → conditioner), and it is the one users click most.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.config import SyntheticShopConfig
from recsys.data.schema import CATALOG_SCHEMA, EVENTS_SCHEMA

_CATEGORIES = [
    "skincare", "haircare", "makeup", "fragrance", "bath", "nails", "shaving", "suncare",
    "oral care", "tools", "men's grooming", "wellness", "baby care", "eye care", "lip care", "body care",
]
_PRODUCT_TYPES = ["cream", "serum", "gel", "oil", "spray", "balm", "mask", "lotion", "kit", "brush", "wash", "tonic"]
_SYNONYMS = {
    "cream": "moisturizer", "serum": "essence", "gel": "jelly", "oil": "elixir", "spray": "mist", "balm": "salve",
    "mask": "masque", "lotion": "emollient", "kit": "set", "brush": "applicator", "wash": "cleanser", "tonic": "toner",
    "hydrating": "moisturising", "gentle": "mild", "matte": "non-shiny", "fresh": "refreshing", "intense": "strong",
}
_ADJECTIVES = ["hydrating", "gentle", "matte", "fresh", "repair", "daily", "intense", "light", "organic", "classic"]
_START = datetime(2024, 1, 1, tzinfo=UTC)
_IMPRESSIONS_PER_STEP = 4


def _catalog(cfg: SyntheticShopConfig, rng: np.random.Generator) -> tuple[pa.Table, np.ndarray, list[str]]:
    n_cat = min(cfg.num_categories, len(_CATEGORIES))
    brands = [f"brand{b:03d}" for b in range(cfg.num_brands)]
    item_cat = rng.integers(0, n_cat, cfg.num_items)
    item_brand = rng.integers(0, cfg.num_brands, cfg.num_items)
    item_type = rng.integers(0, len(_PRODUCT_TYPES), cfg.num_items)
    item_adj = rng.integers(0, len(_ADJECTIVES), cfg.num_items)
    price = np.round(rng.lognormal(3.0, 0.6, cfg.num_items), 2)
    titles = [
        f"{brands[b].title()} {_ADJECTIVES[a]} {_CATEGORIES[c]} {_PRODUCT_TYPES[t]}"
        for b, a, c, t in zip(item_brand, item_adj, item_cat, item_type, strict=True)
    ]
    catalog = pa.table(
        {
            "item_id": [f"sku-{i:07d}" for i in range(cfg.num_items)],
            "title": titles,
            "category": [_CATEGORIES[c] for c in item_cat],
            "brand": [brands[b] for b in item_brand],
            "price": price,
            "attributes": [[f"type:{_PRODUCT_TYPES[t]}", f"style:{_ADJECTIVES[a]}"] for t, a in zip(item_type, item_adj, strict=True)],
        },
        schema=CATALOG_SCHEMA,
    )
    return catalog, item_cat, titles


class _CategorySampler:
    """Draw items from a category with Zipf-like popularity, for many categories at once."""

    def __init__(self, item_cat: np.ndarray, n_cat: int, rng: np.random.Generator):
        self.items = np.argsort(item_cat, kind="stable")
        counts = np.bincount(item_cat, minlength=n_cat)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        weights = np.empty(len(item_cat))
        for c in range(n_cat):
            lo, hi = self.offsets[c], self.offsets[c + 1]
            w = 1.0 / np.arange(1, hi - lo + 1) ** 1.1
            rng.shuffle(w)
            weights[lo:hi] = w / max(w.sum(), 1e-12)
        # Cumulative weight within the category, shifted by the category number: category c spans (c, c+1].
        cat_sorted = item_cat[self.items]
        within = np.zeros(len(item_cat))
        for c in range(n_cat):
            lo, hi = self.offsets[c], self.offsets[c + 1]
            within[lo:hi] = np.cumsum(weights[lo:hi])
        self.cum = cat_sorted + within
        self.empty = counts == 0

    def draw(self, cats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cats = np.where(self.empty[cats], np.argmax(~self.empty), cats)
        pos = np.searchsorted(self.cum, cats + rng.random(len(cats)) * (1 - 1e-9), side="left")
        pos = np.clip(pos, self.offsets[cats], self.offsets[cats + 1] - 1)
        return self.items[pos]


def _session_days(n: int, days: int, rng: np.random.Generator) -> np.ndarray:
    """Traffic by day: weekly rhythm (weekends busier), a seasonal wave, and sale days at 3x."""
    d = np.arange(days)
    weight = (1 + 0.25 * (d % 7 >= 5)) * (1 + 0.4 * np.sin(2 * np.pi * d / max(days, 1)))
    sale_days = rng.choice(days, size=max(1, days // 60), replace=False)
    weight[sale_days] *= 3
    return rng.choice(days, size=n, p=weight / weight.sum())


def _noisy_query(title: str, rng: np.random.Generator) -> str:
    words = title.lower().split()
    # brand, style, category words..., type: keep 2-3 of them, swap in synonyms, sometimes a typo.
    picked = list(rng.choice(words, size=min(len(words), int(rng.integers(2, 4))), replace=False))
    picked = [_SYNONYMS.get(w, w) if rng.random() < 0.3 else w for w in picked]
    if rng.random() < 0.15:
        w = int(rng.integers(0, len(picked)))
        word = picked[w]
        if len(word) > 3:
            i = int(rng.integers(0, len(word) - 1))
            picked[w] = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return " ".join(picked)


def generate_shop(cfg: SyntheticShopConfig) -> tuple[pa.Table, pa.Table]:
    """Return (events, catalog) in the canonical schemas. Same config and seed → identical tables."""
    rng = np.random.default_rng(cfg.seed)
    catalog, item_cat, titles = _catalog(cfg, rng)
    n_cat = int(item_cat.max()) + 1
    sampler = _CategorySampler(item_cat, n_cat, rng)
    successor = sampler.draw(item_cat, rng)  # each item's "goes-with" partner, from its own category

    # Users: interests over categories (Dirichlet via normalised gammas), sessions per user.
    prefs = rng.gamma(0.3, size=(cfg.num_users, n_cat))
    prefs /= prefs.sum(axis=1, keepdims=True)
    n_sessions = 1 + rng.poisson(max(cfg.mean_sessions_per_user - 1, 0), cfg.num_users)
    s_user = np.repeat(np.arange(cfg.num_users), n_sessions)
    n_s = len(s_user)
    s_day = _session_days(n_s, cfg.days, rng)
    s_start = (int(_START.timestamp() * 1000) + s_day.astype(np.int64) * 86_400_000
               + rng.integers(7 * 3600, 23 * 3600, n_s) * 1000)
    order = np.lexsort((s_start, s_user))  # a user's sessions in time order
    s_user, s_start = s_user[order], s_start[order]
    cum = np.cumsum(prefs, axis=1)[s_user]
    s_cat = np.minimum((cum < rng.random(n_s)[:, None]).sum(axis=1), n_cat - 1)
    s_search = rng.random(n_s) < 0.3
    s_wanted = sampler.draw(s_cat, rng)  # what a searching user is looking for

    # Steps: each session has 1 + Poisson(2); a step shows 4 impressions and gets at most one click.
    n_steps = 1 + rng.poisson(2.0, n_s)
    st_session = np.repeat(np.arange(n_s), n_steps)
    st_user = s_user[st_session]
    first_step = np.concatenate([[0], np.cumsum(n_steps)[:-1]])
    st_index = np.arange(len(st_session)) - first_step[st_session]
    step_cats = np.repeat(s_cat[st_session], _IMPRESSIONS_PER_STEP).reshape(-1, _IMPRESSIONS_PER_STEP)
    shown = sampler.draw(step_cats.ravel(), rng).reshape(-1, _IMPRESSIONS_PER_STEP)
    for _ in range(6):  # a step shows distinct items: redraw repeats (popular items repeat often)
        dup = np.zeros(shown.shape, bool)
        for j in range(1, _IMPRESSIONS_PER_STEP):
            dup[:, j] = (shown[:, :j] == shown[:, j : j + 1]).any(axis=1)
        if not dup.any():
            break
        shown[dup] = sampler.draw(step_cats[dup], rng)
    n_st = len(st_session)
    u_click = rng.random(n_st)
    other_slot = rng.integers(1, _IMPRESSIONS_PER_STEP, n_st)
    follow = rng.random(n_st) < 0.6
    clicked = np.full(n_st, -1)
    # The successor chain is sequential per user: walk the k-th step of every user at once.
    user_step = np.arange(n_st) - np.concatenate([[0], np.cumsum(np.bincount(st_user, minlength=cfg.num_users))[:-1]])[st_user]
    prev = np.full(cfg.num_users, -1)
    for k in range(int(user_step.max()) + 1):
        rows = np.flatnonzero(user_step == k)
        p = prev[st_user[rows]]
        is_search_step = s_search[st_session[rows]] & (st_index[rows] == 0)
        lead = np.where((p >= 0) & follow[rows], successor[np.maximum(p, 0)], shown[rows, 0])
        lead = np.where(is_search_step, s_wanted[st_session[rows]], lead)
        for j in range(1, _IMPRESSIONS_PER_STEP):  # keep the step's items distinct: swap, don't repeat
            shown[rows, j] = np.where(shown[rows, j] == lead, shown[rows, 0], shown[rows, j])
        shown[rows, 0] = lead
        slot = np.where(u_click[rows] < 0.7, 0, np.where(u_click[rows] < 0.9, other_slot[rows], -1))
        got = np.where(slot >= 0, shown[rows, np.maximum(slot, 0)], -1)
        clicked[rows] = got
        prev[st_user[rows]] = np.where(got >= 0, got, p)

    # Timestamps: steps 100-300 s apart within a session, after an optional search 5 s before step 0.
    gaps = rng.integers(100, 300, n_st) * 1000
    gaps[first_step] = 0
    st_t = s_start[st_session] + 5_000 * s_search[st_session] + (np.cumsum(gaps) - np.cumsum(gaps)[first_step][st_session])
    cart = (clicked >= 0) & (rng.random(n_st) < 0.25)
    buy = cart & (rng.random(n_st) < 0.6)

    # Assemble event columns: searches, impressions, clicks, carts, purchases.
    searches = np.flatnonzero(s_search)
    imp_t = st_t[:, None] + 1000 * np.arange(_IMPRESSIONS_PER_STEP)[None, :]
    has_click = clicked >= 0
    parts = [
        (s_user[searches], np.full(len(searches), -1), "search", s_start[searches], searches),
        (np.repeat(st_user, _IMPRESSIONS_PER_STEP), shown.ravel(), "impression", imp_t.ravel(), np.repeat(st_session, _IMPRESSIONS_PER_STEP)),
        (st_user[has_click], clicked[has_click], "click", st_t[has_click] + 6_000, st_session[has_click]),
        (st_user[cart], clicked[cart], "add_to_cart", st_t[cart] + 36_000, st_session[cart]),
        (st_user[buy], clicked[buy], "purchase", st_t[buy] + 96_000, st_session[buy]),
    ]
    user = np.concatenate([p[0] for p in parts])
    item = np.concatenate([p[1] for p in parts])
    kind = np.concatenate([np.full(len(p[0]), i, np.int8) for i, p in enumerate(parts)])
    ts = np.concatenate([p[3] for p in parts])
    session = np.concatenate([p[4] for p in parts])
    order = np.lexsort((kind, ts, user))
    user, item, kind, ts, session = user[order], item[order], kind[order], ts[order], session[order]
    keep = _launches_and_trends(cfg, item, ts)
    if keep is not None:
        user, item, kind, ts, session = user[keep], item[keep], kind[keep], ts[keep], session[keep]

    queries = np.array([None] * n_s, dtype=object)
    for s in searches:
        queries[s] = _noisy_query(titles[s_wanted[s]], rng)
    kinds = pa.array([p[2] for p in parts])
    user_ids = pc.binary_join_element_wise("user-", pc.utf8_lpad(pa.array(user).cast(pa.string()), 7, "0"), "")
    item_ids = pc.if_else(pa.array(item >= 0), catalog["item_id"].combine_chunks().take(pa.array(np.maximum(item, 0))), pa.scalar(None, pa.string()))
    events = pa.table(
        {
            "user_id": user_ids,
            "item_id": item_ids,
            "event_type": kinds.take(pa.array(kind)),
            "timestamp": pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "query": pc.if_else(pa.array(kind == 0), pa.array(queries[session], pa.string()), pa.scalar(None, pa.string())),
            "session_id": pc.binary_join_element_wise("s", pa.array(session).cast(pa.string()), ""),
        },
        schema=EVENTS_SCHEMA,
    )
    return events, catalog


def _launches_and_trends(cfg: SyntheticShopConfig, item: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
    """Which events survive the products' launch days and popularity trends (None: all, no draw).
    A separate random stream, so the rest of the shop is the same with or without them."""
    if not (cfg.launch_share or cfg.trend_strength):
        return None
    rng = np.random.default_rng([cfg.seed, 1])
    start_ms, span = int(_START.timestamp() * 1000), cfg.days * 86_400_000
    launched = rng.random(cfg.num_items) < cfg.launch_share
    launch_ms = np.where(launched, start_ms + rng.uniform(0.5, 1.0, cfg.num_items) * span, -np.inf)
    rising = rng.random(cfg.num_items) < 0.5
    where = np.clip((ts - start_ms) / span, 0.0, 1.0)  # 0 at the start of the period, 1 at its end
    has_item = item >= 0
    idx = np.maximum(item, 0)
    ramp = np.where(rising[idx], where, 1.0 - where)  # 1 at the product's popular end
    keep_p = 1.0 - cfg.trend_strength * (1.0 - ramp)
    keep = rng.random(len(item)) < keep_p
    keep &= ts >= launch_ms[idx]
    return ~has_item | keep


def events_per_user(cfg: SyntheticShopConfig) -> float:
    """Expected events per user, to size a shop for a target event count."""
    per_step = _IMPRESSIONS_PER_STEP + 0.9 + 0.9 * 0.25 + 0.9 * 0.25 * 0.6
    return cfg.mean_sessions_per_user * (0.3 + 3.0 * per_step)
