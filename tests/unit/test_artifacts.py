"""The artifact store's one lookup: the latest version of a kind, checked against what it must come from."""

import json

import pytest

from recsys.artifacts import ArtifactStore, ExportMeta, ModelExport


def publish(store, kind, tmp_path, version, **meta):
    src = tmp_path / f"src-{kind}-{version}"
    src.mkdir(exist_ok=True)
    (src / "weights.bin").write_bytes(b"w")
    return store.publish_model(kind, src, version, ExportMeta(stage=kind, run=f"r-{version}", **meta))


def test_latest_checks_the_dataset_and_the_starting_export(tmp_path):
    store = ArtifactStore(tmp_path / "root", "run")
    data_a, data_b = tmp_path / "data-a", tmp_path / "data-b"
    fine = publish(store, "finetune", tmp_path, "v1", dataset_path=str(data_a))
    assert store.latest("finetune").path == fine.path
    assert store.latest("finetune", trained_on=data_a).version == "v1"
    with pytest.raises(ValueError, match="trained on .*data-a.*not on .*data-b.*run the finetune stage again"):
        store.latest("finetune", trained_on=data_b)
    assert store.latest("finetune", trained_on=data_b, required=False) is None
    ctr = publish(store, "ctr", tmp_path, "c1", dataset_path=str(data_a), init_from=str(fine.path))
    assert store.latest("ctr", init_from=fine.path).path == ctr.path
    assert store.latest("ctr", init_from=tmp_path / "elsewhere", required=False) is None


def test_nothing_published_names_the_stage_and_its_script(tmp_path):
    store = ArtifactStore(tmp_path, "run")
    with pytest.raises(FileNotFoundError, match=r"run the ctr stage first .*ray_jobs/train_ctr.py"):
        store.latest("ctr")
    with pytest.raises(FileNotFoundError, match=r"ray_jobs/build_index.py"):
        store.latest("index")
    assert store.latest("search", required=False) is None


def test_versions_are_immutable_and_typed(tmp_path):
    store = ArtifactStore(tmp_path / "root", "run")
    first = publish(store, "pretrain", tmp_path, "v1", dataset_path="d", metrics={"loss": 1.0})
    again = publish(store, "pretrain", tmp_path, "v1", dataset_path="d", metrics={"loss": 9.0})
    assert again.meta.metrics == {"loss": 1.0}  # publishing an existing version only moves LATEST
    with pytest.raises(ValueError, match="is a pretrain export, not a finetune one"):
        store.load("finetune", first.path)


def test_an_export_written_before_the_typed_schema_stays_readable(tmp_path):
    folder = tmp_path / "old-search"
    folder.mkdir()
    (folder / "recsys.json").write_text(json.dumps({"stage": "search", "run": "r", "dataset_path": "d", "pairs": 512,
                                                    "metrics": {"loss": 0.3}, "config": {}}))
    export = ModelExport.load(folder)
    assert export.meta.extra == {"pairs": 512} and export.meta.metrics == {"loss": 0.3}
