"""Resolve the configured source into event and catalog files the Ray Data pipeline reads.

Built-in sources (Amazon Beauty, MovieLens-100k, the synthetic shop) are converted once into
`<artifacts>/sources/<name>/<fingerprint>/{events/date=YYYY-MM-DD/*.parquet, catalog.parquet}`;
a `files` source (your own logs: Parquet, JSONL or CSV, local or any pyarrow filesystem URI) is read
in place. The fingerprint (a hash of the source files, or of the generator settings) names the
dataset version, so a changed input is a new version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.artifacts import ArtifactStore, atomic_folder
from recsys.config import RecsysConfig
from recsys.data.beauty import beauty_files, read_beauty
from recsys.data.movielens import movielens_files, read_movielens
from recsys.data.online_retail import online_retail_files, read_online_retail
from recsys.data.readers import list_files
from recsys.data.synthetic import generate_shop


@dataclass(frozen=True)
class SourceFiles:
    name: str
    kind: str
    events_path: str
    catalog_path: str
    fingerprint: str
    format: str = "parquet"


def resolve_source_kind(cfg: RecsysConfig) -> str:
    if cfg.data.source != "auto":
        return cfg.data.source
    return "beauty" if Path(cfg.data.beauty_dir, "Beauty.txt").is_file() else "synthetic"


def dataset_name(cfg: RecsysConfig) -> str:
    """The configured dataset's name in the store: `data.name`, else the resolved source."""
    return cfg.data.name or resolve_source_kind(cfg)


def dataset_root(cfg: RecsysConfig) -> Path:
    """Where the prepared versions of the configured dataset live."""
    return ArtifactStore.of(cfg).folder("dataset", dataset_name(cfg))


def _hash_local(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


def _hash_files(path: str) -> str:
    """Content hash of local files; for remote URIs, of names, sizes and modification times."""
    fs, files = list_files(path)
    if fs.type_name == "local":
        return _hash_local([Path(f) for f in files])
    h = hashlib.sha256()
    for info in fs.get_file_info(files):
        h.update(f"{info.path}|{info.size}|{info.mtime_ns}".encode())
    return h.hexdigest()[:12]


def write_events_by_date(events: pa.Table, folder: Path) -> None:
    """Hive-partitioned Parquet, one folder per UTC day: Ray Data reads the days as parallel blocks."""
    day = pc.strftime(events["timestamp"], format="%Y-%m-%d")
    pq.write_to_dataset(events.append_column("date", day), folder, partition_cols=["date"],
                        basename_template="part-{i}.parquet")


def materialize_source(cfg: RecsysConfig) -> SourceFiles:
    kind = resolve_source_kind(cfg)
    name = cfg.data.name or kind
    if kind == "files":
        fingerprint = _hash_files(cfg.data.events_path)[:6] + _hash_files(cfg.data.catalog_path)[:6]
        return SourceFiles(name, kind, cfg.data.events_path, cfg.data.catalog_path, fingerprint, cfg.data.format)

    if kind == "beauty":
        fingerprint = _hash_local(beauty_files(cfg.data.beauty_dir))
        make = lambda: read_beauty(cfg.data.beauty_dir)  # noqa: E731
    elif kind == "movielens":
        fingerprint = _hash_local(movielens_files(cfg.data.movielens_dir))
        make = lambda: read_movielens(cfg.data.movielens_dir)  # noqa: E731
    elif kind == "online_retail":
        fingerprint = _hash_local(online_retail_files(cfg.data.online_retail_dir))
        make = lambda: read_online_retail(cfg.data.online_retail_dir)  # noqa: E731
    else:
        fingerprint = "gen-" + hashlib.sha256(cfg.data.synthetic.model_dump_json().encode()).hexdigest()[:12]
        make = lambda: generate_shop(cfg.data.synthetic)  # noqa: E731

    dest = cfg.artifacts_root / "sources" / name / fingerprint
    if not dest.exists():
        with atomic_folder(dest) as scratch:
            events, catalog, *lines = make()
            write_events_by_date(events, scratch / "events")
            pq.write_table(catalog, scratch / "catalog.parquet")
            if lines:  # a raw log: every line with the reason it is (not) an event
                write_source_report(scratch, lines[0], events.num_rows)
    return SourceFiles(name, kind, str(dest / "events"), str(dest / "catalog.parquet"), fingerprint)


SOURCE_REPORT = "source.json"


def write_source_report(folder: Path, lines: pa.Table, n_events: int) -> None:
    """lines.parquet (every raw line, its reason: null for a purchase line) and source.json, whose
    counts add up: raw lines = purchase lines + the lines of every reason; events = purchase lines
    − lines merged into an earlier line's event (the same product twice in one basket)."""
    from recsys.data.online_retail import reason_counts

    pq.write_table(lines, folder / "lines.parquet")
    counts = reason_counts(lines)
    report = {"raw_lines": lines.num_rows, "purchase_lines": counts.pop("purchase"), "quarantined_by_reason": counts,
              "events": n_events, "lines": "lines.parquet"}
    report["merged_lines"] = report["purchase_lines"] - n_events
    (folder / SOURCE_REPORT).write_text(json.dumps(report, indent=2))


def source_report(source: SourceFiles) -> dict | None:
    """The raw log's own quarantine counts (source.json beside the events), when the source has one."""
    path = Path(source.events_path).parent / SOURCE_REPORT
    return json.loads(path.read_text()) | {"lines": str(path.parent / "lines.parquet")} if path.is_file() else None
