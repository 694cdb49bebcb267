"""The artifact store: versioned folders under `artifacts.root`, published atomically with a LATEST
pointer, and the typed artifacts in them. Nothing else reads `LATEST` or `recsys.json` by hand.

    <root>/datasets/<name>/<version>/               a prepared dataset   → Dataset (recsys.data)
    <root>/runs/<run>/                              Ray Train checkpoints (resume)
    <root>/models/<run_name>/<stage>/<version>/     save_pretrained export + recsys.json → ModelExport
    <root>/indexes/<run_name>/<version>/            FAISS index + manifest.json → IndexRelease
    <root>/forecasts/<run_name>/<version>/          forecasts, advice, backtest + manifest.json → ForecastRelease

`ArtifactStore.latest(kind, trained_on=…, init_from=…)` is the one lookup of "the latest X" that
every stage, the server and the benchmarks use.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys.data.dataset import PreparedDataset as Dataset
from recsys.entrypoints import script_for

LATEST = "LATEST"
EXPORT_META = "recsys.json"
INDEX_MANIFEST = "manifest.json"

ModelKind = Literal["pretrain", "finetune", "ctr", "search", "forecaster", "ads"]
Kind = Literal["dataset", "pretrain", "finetune", "ctr", "search", "forecaster", "ads", "index", "forecast"]
MODEL_KINDS: tuple[str, ...] = ("pretrain", "finetune", "ctr", "search", "forecaster", "ads")
# kind → (what it is called in messages, the stage that produces it)
_DESCRIBED = {
    "dataset": ("prepared dataset", "prepare"),
    "pretrain": ("pretrained model", "pretrain"),
    "finetune": ("fine-tuned model", "finetune"),
    "ctr": ("CTR model", "ctr"),
    "search": ("fine-tuned search encoder", "search"),
    "forecaster": ("neural demand forecaster", "forecast"),
    "ads": ("calibrated ad pCTR model", "ads"),
    "index": ("item index", "index"),
    "forecast": ("demand forecast", "forecast"),
}


# ---- publishing ---------------------------------------------------------------------------
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


def point_latest(parent: Path, version: str) -> None:
    tmp = parent / f".{LATEST}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(version)
    os.replace(tmp, parent / LATEST)


def _missing(kind: str, where: Path) -> FileNotFoundError:
    what, stage = _DESCRIBED[kind]
    return FileNotFoundError(
        f"no {what} published under {where}; run the {stage} stage first "
        f"(recsys {stage} --config <file>, or python ray_jobs/{script_for(stage)} --config <file>)"
    )


def latest_version(parent: Path, kind: str) -> Path:
    """The folder LATEST points at under `parent` (FileNotFoundError naming the stage to run)."""
    pointer = parent / LATEST
    if not pointer.is_file():
        raise _missing(kind, parent)
    return parent / pointer.read_text().strip()


# ---- typed artifacts ------------------------------------------------------------------------
def _version_file(folder: Path, name: str, what: str, produced_by: str) -> str:
    """The text of a version folder's metadata file, or FileNotFoundError saying what produces it."""
    file = folder / name
    if not file.is_file():
        raise FileNotFoundError(f"{folder} is not a published {what} (no {name}); run {produced_by} first")
    return file.read_text()


class ExportMeta(BaseModel):
    """`recsys.json` beside every model export: what produced it, from what, and how it scored."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    run: str
    dataset_path: str = Field(description="the prepared dataset version it was trained on")
    dataset: str | None = None  # <name>/<version>, for people
    run_path: str | None = None  # the Ray Train run folder (checkpoints)
    init_from: str | None = None  # the export it started from
    exported_epoch: int | None = None
    selected_by: str | None = None  # "valid_<metric>" or "last epoch"
    final_epoch: int | None = None
    stopped_early: bool = False
    metrics: dict[str, Any] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)  # stage-specific facts (e.g. search pairs)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys_are_extra(cls, data: Any) -> Any:
        """Exports written before this schema (e.g. the search stage's top-level `pairs`) stay readable."""
        if isinstance(data, dict):
            unknown = {k: v for k, v in data.items() if k not in cls.model_fields}
            if unknown:
                data = {k: v for k, v in data.items() if k in cls.model_fields}
                data["extra"] = {**unknown, **(data.get("extra") or {})}
        return data


@dataclass(frozen=True)
class ModelExport:
    """A published model version: a `save_pretrained` folder (or the search encoder's) + ExportMeta."""

    path: Path
    meta: ExportMeta

    @classmethod
    def load(cls, path: str | Path) -> ModelExport:
        path = Path(path).resolve()
        return cls(path, ExportMeta.model_validate_json(_version_file(path, EXPORT_META, "model export", "a training stage")))

    @property
    def version(self) -> str:
        return self.path.name

    @property
    def stage(self) -> str:
        return self.meta.stage

    @property
    def dataset_path(self) -> Path:
        return Path(self.meta.dataset_path).resolve()

    @property
    def init_from(self) -> Path | None:
        return Path(self.meta.init_from).resolve() if self.meta.init_from else None

    def dataset(self) -> Dataset:
        return Dataset(self.dataset_path)


@dataclass(frozen=True)
class _ManifestVersion:
    """A version folder described by its manifest.json (an index or a forecast)."""

    path: Path
    manifest: dict
    what: ClassVar[str] = ""  # how messages call it
    produced_by: ClassVar[str] = ""

    @classmethod
    def load(cls, path: str | Path):
        path = Path(path)
        return cls(path, json.loads(_version_file(path, INDEX_MANIFEST, cls.what, cls.produced_by)))

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def dataset_path(self) -> Path:
        return Path(self.manifest["dataset_path"])


@dataclass(frozen=True)
class IndexRelease(_ManifestVersion):
    """A servable version: one model + its FAISS index (+ CTR ranker, + text index), by manifest."""

    what: ClassVar[str] = "index version"
    produced_by: ClassVar[str] = "`recsys index --config …`"

    @property
    def model_path(self) -> Path:
        return Path(self.manifest["model_path"])

    @property
    def ranker_path(self) -> Path | None:
        return Path(self.manifest["ranker_path"]) if self.manifest.get("ranker_path") else None


@dataclass(frozen=True)
class ForecastRelease(_ManifestVersion):
    """A published demand forecast (recsys.forecast.stage): per product P10/P50/P90 for
    `max_horizon` weeks from `origin`, the replenishment advice, the history it was made from and
    the backtest of every forecaster."""

    what: ClassVar[str] = "forecast version"
    produced_by: ClassVar[str] = "`recsys forecast --config …`"


def _same(a: Path | None, b: Path | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


# ---- the store ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArtifactStore:
    root: Path
    run_name: str

    @classmethod
    def of(cls, cfg) -> ArtifactStore:
        """From the typed config (`artifacts.root`, `run_name`)."""
        return cls(cfg.artifacts_root, cfg.run_name)

    def folder(self, kind: Kind, dataset_name: str | None = None) -> Path:
        """Where the versions of `kind` live (their parent, holding LATEST)."""
        if kind == "dataset":
            if not dataset_name:
                raise ValueError("the dataset folder needs the dataset's name (recsys.data.sources.dataset_name)")
            return self.root / "datasets" / dataset_name
        if kind == "index":
            return self.root / "indexes" / self.run_name
        if kind == "forecast":
            return self.root / "forecasts" / self.run_name
        if kind in MODEL_KINDS:
            return self.root / "models" / self.run_name / kind
        raise ValueError(f"unknown artifact kind {kind!r}; use one of {', '.join(_DESCRIBED)}")

    def runs(self) -> Path:
        return self.root / "runs"

    def load(self, kind: Kind, path: str | Path):
        """The typed artifact at `path` (a version folder of `kind`)."""
        if kind == "dataset":
            return Dataset(Path(path))
        if kind == "index":
            return IndexRelease.load(path)
        if kind == "forecast":
            return ForecastRelease.load(path)
        export = ModelExport.load(path)
        if export.stage != kind:
            raise ValueError(f"{path} is a {export.stage} export, not a {kind} one")
        return export

    def version(self, kind: Kind, version: str, dataset_name: str | None = None):
        return self.load(kind, self.folder(kind, dataset_name) / version)

    def latest(self, kind: Kind, *, trained_on: Dataset | Path | None = None, init_from: str | Path | None = None,
               dataset_name: str | None = None, required: bool = True):
        """The latest published `kind`, checked against what it must come from.

        trained_on: a model must have been trained on this dataset version; init_from: a model must
        have started from this export. When nothing is published or the latest does not match:
        raises with the stage to run (required=True) or returns None (required=False).
        """
        parent = self.folder(kind, dataset_name)
        if not (parent / LATEST).is_file():
            if required:
                raise _missing(kind, parent)
            return None
        found = self.load(kind, latest_version(parent, kind))
        if kind in MODEL_KINDS:
            what, stage = _DESCRIBED[kind]
            want = Path(trained_on.path if isinstance(trained_on, Dataset) else trained_on) if trained_on is not None else None
            if want is not None and not _same(found.dataset_path, want):
                if not required:
                    return None
                raise ValueError(f"the latest {what} {found.path} was trained on {found.dataset_path}, not on {want}; "
                                 f"run the {stage} stage again on this dataset")
            if init_from is not None and not _same(found.init_from, Path(init_from)):
                if not required:
                    return None
                raise ValueError(f"the latest {what} {found.path} was trained from {found.init_from}, not from {init_from}; "
                                 f"run the {stage} stage again")
        return found

    def publish_model(self, kind: ModelKind, src: Path, version: str, meta: ExportMeta) -> ModelExport:
        """Copy `src` to `models/<run>/<kind>/<version>` via a scratch folder and rename, then move
        LATEST to it. Versions are immutable: publishing an existing version only moves LATEST."""
        parent = self.folder(kind)
        final = parent / version
        if not (final / EXPORT_META).is_file():
            with atomic_folder(final) as scratch:
                shutil.copytree(src, scratch, dirs_exist_ok=True)
                (scratch / EXPORT_META).write_text(meta.model_dump_json(indent=2))
        point_latest(parent, version)
        return ModelExport.load(final)

    def publish_index(self, version: str, manifest: dict, write) -> IndexRelease:
        """`write(scratch)` fills the version folder; the manifest is written last, then LATEST moves."""
        return IndexRelease.load(self._publish_folder("index", version, manifest, write))

    def publish_forecast(self, version: str, manifest: dict, write) -> ForecastRelease:
        """Like publish_index, for a forecast version."""
        return ForecastRelease.load(self._publish_folder("forecast", version, manifest, write))

    def _publish_folder(self, kind: Kind, version: str, manifest: dict, write) -> Path:
        parent = self.folder(kind)
        final = parent / version
        if not (final / INDEX_MANIFEST).is_file():
            with atomic_folder(final) as scratch:
                write(scratch)
                (scratch / INDEX_MANIFEST).write_text(json.dumps(manifest, indent=2))
        point_latest(parent, version)
        return final
