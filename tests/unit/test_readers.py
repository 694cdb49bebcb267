"""File-level problems stop the run with the file and column named; nothing here needs Ray."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.data.readers import read_catalog, read_raw_events
from recsys.data.schema import SchemaError


def test_unreadable_parquet_names_the_file(tmp_path):
    (tmp_path / "events.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SchemaError, match=r"events.parquet is not readable Parquet"):
        read_raw_events(str(tmp_path / "events.parquet"))


def test_wrong_schema_names_file_and_columns(tmp_path):
    pq.write_table(pa.table({"user": ["u1"], "event_type": ["click"]}), tmp_path / "e.parquet")
    with pytest.raises(SchemaError, match=r"e.parquet: missing required column\(s\) user_id, timestamp; it has user, event_type"):
        read_raw_events(str(tmp_path))


def test_nested_column_is_rejected(tmp_path):
    pq.write_table(pa.table({"user_id": [["u1"]], "event_type": ["click"], "timestamp": [1]}), tmp_path / "e.parquet")
    with pytest.raises(SchemaError, match="user_id hold nested values"):
        read_raw_events(str(tmp_path))


def test_empty_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_raw_events(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden.parquet").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="empty folder"):
        read_raw_events(str(tmp_path / "empty"))
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(SchemaError, match=r"e.csv is empty: a CSV file needs a header row"):
        read_raw_events(str(tmp_path / "e.csv"))


def test_csv_header_and_format_detection(tmp_path):
    (tmp_path / "e.csv").write_text("user_id,item_id,ts\nu1,a,1\n")
    with pytest.raises(SchemaError, match=r"header lacks required column\(s\) event_type, timestamp"):
        read_raw_events(str(tmp_path / "e.csv"))
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.csv").write_text("x")
    (tmp_path / "mixed" / "b.jsonl").write_text("{}")
    with pytest.raises(SchemaError, match=r"cannot tell the format .* set data.format"):
        read_raw_events(str(tmp_path / "mixed"))


def test_catalog_formats_and_errors(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"item_id": 7, "title": "Lipstick", "price": 9.5, "attributes": ["red"]}\n')
    (tmp_path / "c.csv").write_text("item_id,title,price,attributes\n7,Lipstick,9.5,red|matte\n8,Brush,,\n")
    j, c = read_catalog(str(tmp_path / "c.jsonl")), read_catalog(str(tmp_path / "c.csv"))
    assert j.to_pylist()[0] == {"item_id": "7", "title": "Lipstick", "category": None, "brand": None, "price": 9.5, "attributes": ["red"]}
    assert c["attributes"].to_pylist() == [["red", "matte"], []] and c["price"].to_pylist() == [9.5, None]
    (tmp_path / "bad.jsonl").write_text('{"title": "no id"}\n')
    with pytest.raises(SchemaError, match="bad.jsonl: missing required column item_id"):
        read_catalog(str(tmp_path / "bad.jsonl"))
    (tmp_path / "broken.jsonl").write_text('{"item_id": \n')
    with pytest.raises(SchemaError, match="broken.jsonl: cannot read it as jsonl"):
        read_catalog(str(tmp_path / "broken.jsonl"))
