"""Turn the configured source into canonical Parquet files the Ray Data pipeline reads.

Built-in sources (Amazon Beauty, the synthetic shop) are converted once into
`<artifacts>/sources/<name>/<fingerprint>/{events,catalog}.parquet`; a `parquet` source is read in
place. The fingerprint (hash of the source files or generator settings) names the dataset version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from recsys.artifacts import atomic_folder
from recsys.config import RecsysConfig
from recsys.data.beauty import beauty_files, read_beauty
from recsys.data.synthetic import generate_shop


@dataclass(frozen=True)
class SourceFiles:
    name: str
    kind: str
    events_path: str
    catalog_path: str
    fingerprint: str


def resolve_source_kind(cfg: RecsysConfig) -> str:
    if cfg.data.source != "auto":
        return cfg.data.source
    return "beauty" if Path(cfg.data.beauty_dir, "Beauty.txt").is_file() else "synthetic"


def dataset_root(cfg: RecsysConfig) -> Path:
    """Where the prepared versions of the configured dataset live."""
    return cfg.artifacts_root / "datasets" / (cfg.data.name or resolve_source_kind(cfg))


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


def materialize_source(cfg: RecsysConfig) -> SourceFiles:
    kind = resolve_source_kind(cfg)
    name = cfg.data.name or kind
    if kind == "parquet":
        paths = [Path(cfg.data.events_path), Path(cfg.data.catalog_path)]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"data.events_path/data.catalog_path not found: {', '.join(missing)}")
        files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*.parquet")))
        return SourceFiles(name, kind, str(paths[0]), str(paths[1]), _hash_files(files))

    if kind == "beauty":
        fingerprint = _hash_files(beauty_files(cfg.data.beauty_dir))
        make = lambda: read_beauty(cfg.data.beauty_dir)  # noqa: E731
    else:
        fingerprint = "gen-" + hashlib.sha256(cfg.data.synthetic.model_dump_json().encode()).hexdigest()[:12]
        make = lambda: generate_shop(cfg.data.synthetic)  # noqa: E731

    dest = cfg.artifacts_root / "sources" / name / fingerprint

    def write(folder: Path) -> None:
        events, catalog = make()
        (folder / "events").mkdir()
        # Several files so Ray Data reads them as parallel blocks.
        step = max(1, -(-events.num_rows // 4))
        for i, start in enumerate(range(0, events.num_rows, step)):
            pq.write_table(events.slice(start, step), folder / "events" / f"part-{i:03d}.parquet")
        pq.write_table(catalog, folder / "catalog.parquet")

    if not dest.exists():
        with atomic_folder(dest) as scratch:
            write(scratch)
    return SourceFiles(name, kind, str(dest / "events"), str(dest / "catalog.parquet"), fingerprint)
