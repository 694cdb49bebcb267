"""MovieLens-100k (RecBole atomic files in ../shared/datasets/ml-100k) → canonical events + catalog.

A rating is an explicit "I watched this": it becomes a `purchase` at its real timestamp, so the
time split and sessionization see real time. Titles, release year and genres fill the catalog
(genres → `category` (the first) and `genre:` attributes, the year → a `year:` attribute).
User side features (age, gender, occupation) stay in the source file; the event schema has no place
for them yet.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recsys.data.schema import CATALOG_SCHEMA, EVENTS_SCHEMA

FILES = ("ml-100k.inter", "ml-100k.item")


def movielens_files(ml_dir: str | Path) -> list[Path]:
    files = [Path(ml_dir) / f for f in FILES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"MovieLens-100k not found: missing {', '.join(missing)}. Set data.movielens_dir to the folder holding "
            "ml-100k.inter and ml-100k.item (../shared/datasets/ml-100k), or use another data.source."
        )
    return files


def _read_atomic(path: Path) -> pa.Table:
    """RecBole atomic file: tab-separated, header `name:type`; every column read as text."""
    header = path.open(encoding="utf-8").readline().rstrip("\n").split("\t")
    names = [h.split(":")[0] for h in header]
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, encoding="latin-1"),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
    )


def read_movielens(ml_dir: str | Path) -> tuple[pa.Table, pa.Table]:
    inter_file, item_file = movielens_files(ml_dir)
    inter = _read_atomic(inter_file)
    n = inter.num_rows
    seconds = pc.cast(pc.cast(inter["timestamp"], pa.float64()), pa.int64())
    events = pa.table(
        {
            "user_id": inter["user_id"],
            "item_id": inter["item_id"],
            "event_type": pa.array(["purchase"] * n),
            "timestamp": pc.multiply(seconds, 1000).cast(pa.timestamp("ms", tz="UTC")),
            "query": pa.nulls(n, pa.string()),
            "session_id": pa.nulls(n, pa.string()),
        },
        schema=EVENTS_SCHEMA,
    )
    items = _read_atomic(item_file).to_pylist()
    genres = [(r.get("class") or "").split() for r in items]
    catalog = pa.table(
        {
            "item_id": [r["item_id"] for r in items],
            "title": [r["movie_title"] for r in items],
            "category": [g[0] if g else None for g in genres],
            "brand": pa.nulls(len(items), pa.string()),
            "price": pa.nulls(len(items), pa.float64()),
            "attributes": [[f"genre:{x}" for x in g] + ([f"year:{r['release_year']}"] if r.get("release_year") else [])
                           for r, g in zip(items, genres, strict=True)],
        },
        schema=CATALOG_SCHEMA,
    )
    return events, catalog
