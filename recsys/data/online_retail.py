"""UCI Online Retail (../shared/datasets/online-retail): a real shop's raw invoice log → canonical
events, catalog, and every raw line with the reason it is or is not a purchase event.

Each raw line gets the first reason that applies, in this order (None: a purchase by a known
customer, which becomes part of an event):

    cancellation           InvoiceNo starts with "C" (the line reverses an earlier sale)
    non_product_code       StockCode is not a product (POST, DOT, M, D, BANK CHARGES, AMAZONFEE, ...):
                           products are five digits and up to two letters (85123A)
    no_description         the line has no product text
    non_positive_quantity  Quantity ≤ 0 (adjustments, lost stock)
    non_positive_price     UnitPrice ≤ 0 (free items, write-offs)
    no_customer            a guest checkout: a real sale (demand forecasting counts it) but no user

An invoice is a basket: its `InvoiceNo` is the event's session, and several lines of one product
in one invoice become one event (their quantities summed in `lines.parquet`, whose `event` column
says which event each line became part of). Times are UK local (Europe/London) → UTC. A product's
title is its latest description; its price the median unit price of its purchase lines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.data.schema import CATALOG_SCHEMA, EVENTS_SCHEMA

FILE = "online_retail.parquet"
COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country")
REASONS = ("cancellation", "non_product_code", "no_description", "non_positive_quantity", "non_positive_price", "no_customer")
PRODUCT_CODE = r"^\d{5}[A-Za-z]{0,2}$"
SHOP_TIMEZONE = "Europe/London"

# Every raw line, normalised: what demand forecasting reads (guest sales and cancellations included).
LINES_SCHEMA = pa.schema([
    pa.field("invoice", pa.string()), pa.field("item_id", pa.string()), pa.field("description", pa.string()),
    pa.field("quantity", pa.int64()), pa.field("unit_price", pa.float64()), pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
    pa.field("customer_id", pa.string()), pa.field("country", pa.string()), pa.field("reason", pa.string()),
])


def online_retail_files(folder: str | Path) -> list[Path]:
    path = Path(folder) / FILE
    if not path.is_file():
        raise FileNotFoundError(f"Online Retail not found: {path} is missing. Set data.online_retail_dir to the folder "
                                f"holding {FILE} (../shared/datasets/online-retail), or use another data.source.")
    return [path]


def _check_columns(raw: pa.Table, path: Path) -> None:
    missing = [c for c in COLUMNS if c not in raw.column_names]
    if missing:
        raise ValueError(f"{path}: the Online Retail file lacks the columns {missing}; expected {list(COLUMNS)}")


def normalise_lines(raw: pa.Table) -> pa.Table:
    """Raw invoice lines → LINES_SCHEMA with each line's reason (None: a purchase by a known customer).
    Malformed values (unparseable dates, non-numeric quantities) never raise: they are reasons too."""
    text = lambda name: pc.utf8_trim_whitespace(raw[name].cast(pa.string()))  # noqa: E731
    invoice, code, description = text("InvoiceNo"), text("StockCode"), text("Description")
    quantity = pc.cast(raw["Quantity"], pa.int64(), safe=False) if pa.types.is_integer(raw["Quantity"].type) else \
        pc.cast(pc.cast(raw["Quantity"], pa.string()), pa.float64(), safe=False).cast(pa.int64(), safe=False)
    price = pc.cast(raw["UnitPrice"], pa.float64())
    local = pc.strptime(pc.cast(raw["InvoiceDate"], pa.string()), format="%Y-%m-%d %H:%M:%S", unit="ms", error_is_null=True)
    # Autumn's repeated hour: the earlier instant; spring's missing hour cannot occur in a real log.
    timestamp = pc.assume_timezone(local, timezone=SHOP_TIMEZONE, ambiguous="earliest", nonexistent="earliest")
    customer = raw["CustomerID"]
    if pa.types.is_floating(customer.type):  # pandas wrote the ids as floats (nulls for guests): 12346.0 → "12346"
        customer = pc.cast(pc.cast(customer, pa.int64(), safe=False), pa.string())
    else:
        customer = pc.utf8_trim_whitespace(customer.cast(pa.string()))
    tests = [
        ("cancellation", pc.fill_null(pc.starts_with(invoice, "C"), False)),
        ("non_product_code", pc.invert(pc.fill_null(pc.match_substring_regex(code, PRODUCT_CODE), False))),
        ("no_description", pc.fill_null(pc.equal(pc.utf8_length(description), 0), True)),
        ("non_positive_quantity", pc.fill_null(pc.less_equal(quantity, 0), True)),
        ("non_positive_price", pc.fill_null(pc.less_equal(price, 0.0), True)),
        ("no_customer", pc.fill_null(pc.equal(pc.utf8_length(customer), 0), True)),
    ]
    reason = pa.nulls(raw.num_rows, pa.string())
    for name, hit in reversed(tests):  # the first reason in REASONS wins
        reason = pc.if_else(hit, pa.scalar(name), reason)
    # A line without a time cannot be placed anywhere; it is a malformed one, named as such.
    reason = pc.if_else(pc.is_null(timestamp), pa.scalar("unparseable_date"), reason)
    return pa.table([invoice, code, description, quantity, price, timestamp.cast(pa.timestamp("ms", tz="UTC")),
                     customer, text("Country"), reason], schema=LINES_SCHEMA)


def reason_counts(lines: pa.Table) -> dict[str, int]:
    """{reason: lines} for every reason (0 included) and "purchase" for the lines that are purchases."""
    counts = dict.fromkeys([*REASONS, "unparseable_date"], 0)
    for row in pc.value_counts(lines["reason"]).to_pylist():
        counts[row["values"] if row["values"] is not None else "purchase"] = row["counts"]
    return {"purchase": counts.pop("purchase", 0), **counts}


def read_online_retail(folder: str | Path) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(events, catalog, lines) of the shop."""
    (path,) = online_retail_files(folder)
    raw = pq.read_table(path)
    _check_columns(raw, path)
    lines = normalise_lines(raw)
    kept = lines.filter(pc.is_null(lines["reason"]))
    # One event per (invoice, product): the basket's lines of a product, at the invoice's time.
    grouped = kept.group_by(["customer_id", "invoice", "item_id"]).aggregate([("timestamp", "min"), ("quantity", "sum")])
    events = pa.table({
        "user_id": grouped["customer_id"], "item_id": grouped["item_id"],
        "event_type": pa.array(["purchase"] * grouped.num_rows),
        "timestamp": grouped["timestamp_min"], "query": pa.nulls(grouped.num_rows, pa.string()),
        "session_id": grouped["invoice"],
    }, schema=EVENTS_SCHEMA).sort_by([("timestamp", "ascending"), ("user_id", "ascending"), ("item_id", "ascending")])
    return events, catalog_of(lines, kept), lines


def catalog_of(lines: pa.Table, kept: pa.Table) -> pa.Table:
    """Products bought by known customers: the latest description as the title, the median price."""
    described = lines.filter(pc.and_(pc.is_valid(lines["description"]), pc.greater(pc.utf8_length(lines["description"]), 0)))
    latest = described.sort_by([("item_id", "ascending"), ("timestamp", "descending")])
    ids = latest["item_id"].to_pylist()
    titles: dict[str, str] = {}
    for item, title in zip(ids, latest["description"].to_pylist(), strict=True):
        titles.setdefault(item, title)  # rows run newest first per item
    prices = kept.group_by("item_id").aggregate([("unit_price", "list")])
    median = {i: float(np.median(p)) for i, p in zip(prices["item_id"].to_pylist(), prices["unit_price_list"].to_pylist(), strict=True)}
    items = sorted(median)
    return pa.table({
        "item_id": items, "title": [titles.get(i) for i in items],
        "category": pa.nulls(len(items), pa.string()), "brand": pa.nulls(len(items), pa.string()),
        "price": [median[i] for i in items], "attributes": [[] for _ in items],
    }, schema=CATALOG_SCHEMA)
