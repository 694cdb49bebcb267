"""Versioned folders under `artifacts.root`, published atomically with a LATEST pointer.

    <root>/datasets/<name>/<version>/      prepared data (recsys.data)
    <root>/runs/<run>/                     Ray Train checkpoints (resume)
    <root>/models/<run_name>/<stage>/<version>/   save_pretrained exports + recsys.json
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LATEST = "LATEST"


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a scratch folder beside `final`; rename it to `final` when the block succeeds.

    Readers never see a half-written version. When another writer published `final` first, its
    copy wins and ours is dropped (versions are content-addressed, so both are the same).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        yield scratch
        try:
            os.rename(scratch, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def publish_folder(src: Path, parent: Path, version: str, metadata: dict) -> Path:
    """Copy `src` to `parent/version` via a scratch folder and rename, then move LATEST to it.

    Versions are immutable: publishing an existing version only moves LATEST.
    """
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / version
    if (final / "recsys.json").is_file():  # already published: versions are immutable
        point_latest(parent, version)
        return final
    with atomic_folder(final) as scratch:
        shutil.copytree(src, scratch, dirs_exist_ok=True)
        (scratch / "recsys.json").write_text(json.dumps(metadata, indent=2, default=str))
    point_latest(parent, version)
    return final


def point_latest(parent: Path, version: str) -> None:
    tmp = parent / f".{LATEST}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(version)
    os.replace(tmp, parent / LATEST)


def latest_version(parent: Path, what: str, produced_by: str) -> Path:
    pointer = parent / LATEST
    if not pointer.is_file():
        raise FileNotFoundError(
            f"no {what} published under {parent}; run the {produced_by} stage first "
            f"(recsys {produced_by} --config <file>, or python ray_jobs/{produced_by.replace('prepare', 'prepare_data')}.py)"
        )
    return parent / pointer.read_text().strip()


def model_dir(root: Path, run_name: str, stage: str) -> Path:
    return root / "models" / run_name / stage
