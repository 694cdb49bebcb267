"""The Online Retail adapter on a hand-made slice holding every kind of dirty line, then on the
real file (when ../shared/datasets is there): every raw line is accounted for by reason."""

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.data.online_retail import FILE, REASONS, read_online_retail, reason_counts

ROWS = [
    # InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country
    ("536365", "85123A", "WHITE HANGING HEART", 6, "2010-12-01 08:26:00", 2.55, 17850.0, "United Kingdom"),  # GMT
    ("536365", "85123A", "WHITE HANGING HEART", 2, "2010-12-01 08:26:00", 2.75, 17850.0, "United Kingdom"),  # same basket: merged
    ("536366", "71053", "WHITE METAL LANTERN", 1, "2011-07-01 10:00:00", 3.39, 17850.0, "United Kingdom"),  # BST: 09:00 UTC
    ("540001", "85123A", "CREAM HANGING HEART", 1, "2011-08-01 12:00:00", 2.95, 13047.0, "France"),  # a newer title
    ("C536379", "85123A", "WHITE HANGING HEART", -1, "2010-12-01 09:41:00", 2.55, 17850.0, "United Kingdom"),
    ("536380", "POST", "POSTAGE", 3, "2010-12-01 09:45:00", 18.0, 12583.0, "France"),
    ("536381", "BANK CHARGES", "Bank Charges", 1, "2010-12-01 10:00:00", 15.0, 12583.0, "France"),
    ("536382", "22139", None, 56, "2010-12-01 11:52:00", 0.0, None, "United Kingdom"),
    ("536383", "22140", "", 4, "2010-12-01 11:53:00", 1.0, 12583.0, "United Kingdom"),
    ("536384", "21730", "GLASS STAR LANTERN", -12, "2010-12-01 12:00:00", 4.25, 12583.0, "United Kingdom"),
    ("536385", "21731", "RED TOADSTOOL LIGHT", 5, "2010-12-01 12:01:00", 0.0, 12583.0, "United Kingdom"),
    ("536386", "21732", "GUEST ITEM", 2, "2010-12-01 12:02:00", 1.25, None, "United Kingdom"),
    ("536387", "21733", "BAD DATE ITEM", 2, "01/12/2010 12:03", 1.25, 12583.0, "United Kingdom"),
]


@pytest.fixture
def shop(tmp_path):
    names = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
    table = pa.table({n: [r[i] for r in ROWS] for i, n in enumerate(names)})
    pq.write_table(table, tmp_path / FILE)
    return read_online_retail(tmp_path)


def test_every_dirty_line_gets_its_own_reason_and_the_counts_add_up(shop):
    _, _, lines = shop
    counts = reason_counts(lines)
    assert counts == {"purchase": 4, "cancellation": 1, "non_product_code": 2, "no_description": 2,
                      "non_positive_quantity": 1, "non_positive_price": 1, "no_customer": 1, "unparseable_date": 1}
    assert sum(counts.values()) == len(ROWS)
    assert set(REASONS) < set(counts)


def test_a_basket_makes_one_event_per_product_in_utc(shop):
    events, _, _ = shop
    rows = events.to_pylist()
    assert [(r["user_id"], r["item_id"], r["session_id"]) for r in rows] == [
        ("17850", "85123A", "536365"), ("17850", "71053", "536366"), ("13047", "85123A", "540001")]
    assert rows[0]["timestamp"] == datetime(2010, 12, 1, 8, 26, tzinfo=UTC)  # winter: London = UTC
    assert rows[1]["timestamp"] == datetime(2011, 7, 1, 9, 0, tzinfo=UTC)  # summer: London = UTC + 1
    assert {r["event_type"] for r in rows} == {"purchase"}


def test_catalog_title_is_the_latest_description_and_price_the_median(shop):
    _, catalog, _ = shop
    items = {r["item_id"]: r for r in catalog.to_pylist()}
    assert set(items) == {"85123A", "71053"}  # products bought by known customers
    assert items["85123A"]["title"] == "CREAM HANGING HEART"
    assert items["85123A"]["price"] == pytest.approx(2.75)  # median of 2.55, 2.75, 2.95
    assert items["71053"]["category"] is None and items["71053"]["attributes"] == []


def test_a_file_without_the_columns_names_them(tmp_path):
    pq.write_table(pa.table({"InvoiceNo": ["1"], "StockCode": ["10002"]}), tmp_path / FILE)
    with pytest.raises(ValueError, match="lacks the columns .*Description"):
        read_online_retail(tmp_path)


def test_the_real_log_is_accounted_for_line_by_line(shared_datasets):
    events, catalog, lines = read_online_retail(shared_datasets / "online-retail")
    counts = reason_counts(lines)
    assert lines.num_rows == sum(counts.values()) == 541_909
    # The published dirt (shared/datasets/README.md): 9,288 cancellation lines, 33 non-product codes.
    assert counts["cancellation"] == 9_288 and counts["unparseable_date"] == 0
    import pyarrow.compute as pc

    from recsys.data.online_retail import PRODUCT_CODE

    non_products = set(pc.unique(lines.filter(pc.invert(pc.match_substring_regex(lines["item_id"], PRODUCT_CODE)))["item_id"]).to_pylist())
    assert len(non_products) == 33 and {"POST", "DOT", "M", "BANK CHARGES", "AMAZONFEE"} <= non_products
    # a non-product line that is also a cancellation counts as the cancellation (the first reason)
    flagged = set(pc.unique(lines.filter(pc.equal(lines["reason"], "non_product_code"))["item_id"]).to_pylist())
    assert flagged <= non_products
    assert events.num_rows < counts["purchase"] and catalog.num_rows > 3_000
    print(f"Online Retail: {counts}; {events.num_rows} events from {counts['purchase']} purchase lines, {catalog.num_rows} products")
