"""Every validation rule and reason code, on hand-made raw rows (no Ray)."""

import pyarrow as pa
import pytest

from recsys.config import ValidationConfig
from recsys.data.readers import RAW_COLUMNS
from recsys.data.validation import (
    REASONS,
    QuarantineThresholdExceeded,
    check_quarantine,
    good_rows,
    quarantined_rows,
    validate_events,
)

CATALOG = pa.array(["sku-1", "sku-2"])
GOOD = {"user_id": "u1", "item_id": "sku-1", "event_type": "click", "timestamp": "2024-03-01T10:00:00Z"}

# (reason, the fields that differ from GOOD); `None` removes the field.
CASES = [
    ("missing_user_id", {"user_id": None}),
    ("missing_user_id", {"user_id": "   "}),
    ("missing_event_type", {"event_type": None}),
    ("missing_timestamp", {"timestamp": None}),
    ("bad_timestamp", {"timestamp": "yesterday"}),
    ("unknown_event_type", {"event_type": "like"}),
    ("bad_user_id", {"user_id": "bad user!"}),
    ("missing_item_id", {"item_id": None}),
    ("bad_item_id", {"item_id": "sku 1;drop"}),
    ("missing_query", {"event_type": "search", "item_id": None}),
    ("timestamp_out_of_range", {"timestamp": "0"}),
    ("timestamp_out_of_range", {"timestamp": "2199-01-01T00:00:00"}),
    ("unknown_item", {"item_id": "sku-999"}),
]


def raw(rows: list[dict], records: list[str | None] | None = None) -> pa.Table:
    cols = {c: pa.array([r.get(c) for r in rows], pa.string()) for c in RAW_COLUMNS}
    cols["_record"] = pa.array(records or [None] * len(rows), pa.string())
    cols["_source"] = pa.array(["f.jsonl"] * len(rows), pa.string())
    return pa.table(cols)


def run(batch: pa.Table, **cfg) -> pa.Table:
    return validate_events(batch, ValidationConfig(**cfg).model_dump(), CATALOG)


@pytest.mark.parametrize(("reason", "change"), CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(CASES)])
def test_each_rule_quarantines_with_its_reason(reason, change):
    out = run(raw([GOOD, {**GOOD, **change}]))
    assert out["reason"].to_pylist() == [None, reason]


def test_malformed_record_keeps_the_raw_line():
    out = run(raw([{}], records=["{not json"]))
    bad = quarantined_rows(out)
    assert bad["reason"].to_pylist() == ["malformed_record"]
    assert bad["_record"].to_pylist() == ["{not json"] and bad["_source"].to_pylist() == ["f.jsonl"]


def test_every_reason_code_is_exercised():
    assert {r for r, _ in CASES} | {"malformed_record", "duplicate_event"} == set(REASONS)


def test_good_rows_are_typed_and_unchanged():
    rows = [
        GOOD,
        {**GOOD, "timestamp": "1709287200000", "event_type": "Purchase"},  # epoch ms as text, any case
        {"user_id": "u2", "event_type": "search", "query": "red lipstick", "timestamp": "2024-03-01 10:00:00"},
    ]
    out = good_rows(run(raw(rows)))
    assert out.num_rows == 3
    assert out["event_type"].to_pylist() == ["click", "purchase", "search"]
    ms = out["timestamp"].cast(pa.int64()).to_pylist()
    assert ms == [1709287200000, 1709287200000, 1709287200000]
    assert out["query"].to_pylist() == [None, None, "red lipstick"]


def test_numeric_timestamps_use_the_configured_unit():
    batch = raw([GOOD]).set_column(RAW_COLUMNS.index("timestamp"), "timestamp", pa.array([1709287200], pa.int64()))
    assert run(batch)["reason"].to_pylist() == ["timestamp_out_of_range"]  # seconds read as ms: 1970
    ok = run(batch, numeric_timestamp_unit="s")
    assert ok["reason"].to_pylist() == [None] and ok["timestamp"].to_pylist() == [1709287200000]


def test_mixed_types_in_one_column_are_handled_row_by_row():
    # A Parquet column of ints next to a file of strings: ids compare as text.
    batch = raw([GOOD, GOOD]).set_column(0, "user_id", pa.array([17, 18], pa.int64()))
    out = run(batch)
    assert out["reason"].to_pylist() == [None, None] and out["user_id"].to_pylist() == ["17", "18"]


def test_rows_are_conserved():
    rows = [GOOD] + [{**GOOD, **change} for _, change in CASES]
    out = run(raw(rows))
    assert good_rows(out).num_rows + quarantined_rows(out).num_rows == len(rows)
    assert quarantined_rows(out)["user_id"].to_pylist()[0] is None  # raw values kept, not typed


def test_threshold_names_the_setting_and_top_reasons(tmp_path):
    check_quarantine({"unknown_item": 5}, 100, 0.05, str(tmp_path))  # exactly at the threshold: fine
    with pytest.raises(QuarantineThresholdExceeded) as err:
        check_quarantine({"unknown_item": 5, "bad_timestamp": 2}, 100, 0.05, str(tmp_path))
    msg = str(err.value)
    assert "data.validation.max_quarantine_fraction=0.05" in msg and "unknown_item: 5 rows" in msg
    assert msg.index("unknown_item") < msg.index("bad_timestamp") and str(tmp_path) in msg
