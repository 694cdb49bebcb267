"""Read raw events (Parquet, JSON Lines, CSV) from local paths or URIs into Ray Data, untyped.

Every read yields the same raw shape: the canonical event columns as they came (any type), plus
`_record` (the raw line for JSONL/CSV rows that could not even be parsed into fields) and
`_source` (the file). Typing and checking happen in `validation.py`, row by row, so one bad row
is quarantined instead of failing a whole file. JSONL and CSV are read as text lines for that
reason (so a CSV field may not contain a newline); Parquet is read natively.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from recsys.data.schema import CATALOG_SCHEMA, EVENTS_SCHEMA, SchemaError

_EXTENSIONS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
RAW_COLUMNS = [f.name for f in EVENTS_SCHEMA]
REQUIRED_COLUMNS = [f.name for f in EVENTS_SCHEMA if not f.nullable]


def list_files(path: str) -> tuple[pafs.FileSystem, list[str]]:
    """The data files at `path` (a file or a folder, searched recursively), hidden files skipped."""
    fs, root = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{path} does not exist; set data.events_path / data.catalog_path to an existing file or folder")
    if info.type == pafs.FileType.File:
        return fs, [root]
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    files = sorted(
        f.path for f in found
        if f.type == pafs.FileType.File and not any(p.startswith((".", "_")) for p in PurePosixPath(f.path).relative_to(root).parts)
    )
    if not files:
        raise FileNotFoundError(f"{path} is an empty folder: no data files to read")
    return fs, files


def detect_format(files: list[str], configured: str, what: str) -> str:
    if configured != "auto":
        return configured
    formats = {_EXTENSIONS.get(PurePosixPath(f).suffix.lower()) for f in files}
    if None in formats or len(formats) != 1:
        names = ", ".join(sorted({PurePosixPath(f).suffix or "<none>" for f in files}))
        raise SchemaError(
            f"{what}: cannot tell the format from the file extensions ({names}); use one of .parquet, .jsonl, .csv "
            "or set data.format to parquet, jsonl or csv"
        )
    return formats.pop()


_MAX_GROUP_BYTES = 64 << 20  # files are read in groups of at most about this size: one group → one block


def _group_files(fs: pafs.FileSystem, files: list[str], cpus: int) -> list[list[str]]:
    """Consecutive files in groups: at least ~4 groups per CPU (balance), at most 64 MiB each (memory)."""
    infos = fs.get_file_info(files)
    target = max(1 << 20, min(_MAX_GROUP_BYTES, sum(i.size or 0 for i in infos) // (4 * cpus)))
    groups, current, size = [], [], 0
    for info in infos:
        current.append(info.path)
        size += info.size or 0
        if size >= target:
            groups.append(current)
            current, size = [], 0
    return groups + ([current] if current else [])


def read_raw_events(path: str, fmt: str = "auto") -> ray.data.Dataset:
    """A streaming Ray Data read: workers open the files themselves (pyarrow filesystems, any URI).

    Ray's own `read_parquet` spends ~0.1 s per file on this machine before reading a byte, which a
    shop partitioned by day (hundreds of small files) turns into most of the pipeline's time.
    """
    fs, files = list_files(path)
    fmt = detect_format(files, fmt, f"events {path}")
    if fmt == "parquet":
        for f in files:
            _check_parquet_columns(fs, f)
    headers = {f: _csv_header(fs, f) for f in files} if fmt == "csv" else {}
    cpus = max(1, int(ray.cluster_resources().get("CPU", 2)))
    groups = _group_files(fs, files, cpus)
    blocks = min(len(groups), cpus * 2)
    return ray.data.from_items([{"paths": g} for g in groups], override_num_blocks=blocks).map_batches(
        _read_group, batch_size=1, batch_format="pyarrow", fn_kwargs={"fs": fs, "fmt": fmt, "headers": headers}
    )


def _read_group(batch: pa.Table, fs: pafs.FileSystem, fmt: str, headers: dict[str, list[str]]) -> pa.Table:
    tables = []
    for path in (p for paths in batch["paths"].to_pylist() for p in paths):
        if fmt == "parquet":
            with fs.open_input_file(path) as f:
                pf = pq.ParquetFile(f)
                present = [c for c in RAW_COLUMNS if c in pf.schema_arrow.names]
                tables.append(_parquet_to_raw(pf.read(columns=present), path))
            continue
        with fs.open_input_stream(path) as stream:
            lines = [line for line in stream.read().decode("utf-8", errors="replace").splitlines() if line.strip()]
        tables.append(_parse_jsonl(lines, path) if fmt == "jsonl" else _parse_csv(lines, path, headers[path]))
    if not tables:
        return pa.table(_empty_raw(0) | {"_record": pa.nulls(0, pa.string()), "_source": _repeat("", 0)})
    return pa.concat_tables(tables, promote_options="permissive").unify_dictionaries().combine_chunks()


def _check_parquet_columns(fs: pafs.FileSystem, file: str) -> None:
    try:
        schema = pq.read_schema(file, filesystem=fs)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for unreadable files
        raise SchemaError(f"events file {file} is not readable Parquet: {exc}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise SchemaError(
            f"events file {file}: missing required column(s) {', '.join(missing)}; it has {', '.join(schema.names)}. "
            "Required: user_id, event_type, timestamp (see recsys/data/schema.py)"
        )
    nested = [n for n in RAW_COLUMNS if n in schema.names and pa.types.is_nested(schema.field(n).type)]
    if nested:
        raise SchemaError(f"events file {file}: column(s) {', '.join(nested)} hold nested values; expected scalars")


def _repeat(path: str, n: int) -> pa.Array:
    """The file name for every row, dictionary-encoded: 4 bytes a row instead of the whole path."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([path], pa.string()))


def _empty_raw(n: int) -> dict[str, pa.Array]:
    return {c: pa.nulls(n, pa.string()) for c in RAW_COLUMNS}


def _parquet_to_raw(table: pa.Table, path: str) -> pa.Table:
    cols = _empty_raw(table.num_rows)
    for c in RAW_COLUMNS:
        if c in table.column_names:
            cols[c] = table[c]
    cols["_record"] = pa.nulls(table.num_rows, pa.string())
    cols["_source"] = _repeat(path, table.num_rows)
    return pa.table(cols)


def _as_text(value) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _rows_to_raw(rows: list[dict | None], lines: list[str], source: str) -> pa.Table:
    """Rows parsed into dicts of strings (None: unparsable; its raw line is kept in `_record`)."""
    cols: dict[str, list] = {c: [] for c in RAW_COLUMNS}
    for row in rows:
        for c in RAW_COLUMNS:
            cols[c].append(_as_text(row.get(c)) if row is not None else None)
    table = {c: pa.array(v, pa.string()) for c, v in cols.items()}
    table["_record"] = pa.array([line if row is None else None for row, line in zip(rows, lines, strict=True)], pa.string())
    table["_source"] = _repeat(source, len(rows))
    return pa.table(table)


def _parse_jsonl(lines: list[str], source: str) -> pa.Table:
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        rows.append(row if isinstance(row, dict) else None)
    return _rows_to_raw(rows, lines, source)


def _csv_header(fs: pafs.FileSystem, file: str) -> list[str]:
    with fs.open_input_stream(file) as f:
        first = f.read(1 << 16).decode("utf-8", errors="replace").splitlines()
    if not first:
        raise SchemaError(f"events file {file} is empty: a CSV file needs a header row")
    header = next(csv.reader([first[0]]))
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise SchemaError(f"events file {file}: header lacks required column(s) {', '.join(missing)}; header is {header}")
    return header


def _parse_csv(lines: list[str], source: str, header: list[str]) -> pa.Table:
    rows = []
    body = lines[1:]  # the first line is the header
    for line in body:
        fields = next(csv.reader(io.StringIO(line)), [])
        rows.append({k: (v if v != "" else None) for k, v in zip(header, fields, strict=True)} if len(fields) == len(header) else None)
    return _rows_to_raw(rows, body, source)


def read_catalog(path: str, fmt: str = "auto") -> pa.Table:
    """The item catalog as one Arrow table in the canonical schema (catalogs fit on one node)."""
    fs, files = list_files(path)
    fmt = detect_format(files, fmt, f"catalog {path}")
    tables = []
    for f in files:
        try:
            if fmt == "parquet":
                t = pq.read_table(f, filesystem=fs)
            else:
                with fs.open_input_stream(f) as stream:
                    text = stream.read().decode("utf-8")
                if fmt == "jsonl":
                    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
                else:
                    rows = list(csv.DictReader(io.StringIO(text)))
                    for r in rows:  # CSV attributes: "a|b|c"
                        r["attributes"] = [a for a in (r.get("attributes") or "").split("|") if a]
                        r["price"] = float(r["price"]) if r.get("price") not in (None, "") else None
                t = pa.Table.from_pylist(rows)
        except (ValueError, OSError, pa.ArrowInvalid) as exc:
            raise SchemaError(f"catalog file {f}: cannot read it as {fmt}: {exc}") from None
        tables.append(_to_catalog_schema(t, f))
    return pa.concat_tables(tables)


def _to_catalog_schema(t: pa.Table, file: str) -> pa.Table:
    if "item_id" not in t.column_names:
        raise SchemaError(f"catalog file {file}: missing required column item_id; it has {', '.join(t.column_names)}")
    cols = {}
    for field in CATALOG_SCHEMA:
        if field.name not in t.column_names:
            cols[field.name] = pa.nulls(t.num_rows, field.type)
            continue
        try:
            cols[field.name] = t[field.name].cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(f"catalog file {file}: column {field.name} has type {t.schema.field(field.name).type}, "
                              f"expected {field.type}: {exc}") from None
    return pa.table(cols, schema=CATALOG_SCHEMA)
