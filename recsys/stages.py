"""The pipeline stages as library calls; `ray_jobs/`, the CLI and the demo are thin over these.

Each stage finds its inputs in the artifact store by config (latest published version), so stages
can run as separate `ray job submit` calls, on different machines, in any later session.
"""

from __future__ import annotations

import json
from pathlib import Path

from recsys.artifacts import latest_version, model_dir
from recsys.config import RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.data.sources import dataset_root

# The pipeline's stages, in order; each has an entrypoint ray_jobs/<script>.py.
PIPELINE_STAGES = ("prepare", "pretrain", "finetune", "ctr", "search", "index", "evaluate")


def prepare(cfg: RecsysConfig) -> PreparedDataset:
    from recsys.data.pipeline import prepare_dataset

    return prepare_dataset(cfg)


def latest_dataset(cfg: RecsysConfig) -> PreparedDataset:
    return PreparedDataset.latest(dataset_root(cfg))


def pretrain(cfg: RecsysConfig, dataset: PreparedDataset | None = None):
    from recsys.train.trainer import run_stage

    if not cfg.pretrain.enabled:
        return None
    return run_stage(cfg, "pretrain", dataset or latest_dataset(cfg))


def pretrained_model(cfg: RecsysConfig, dataset: PreparedDataset) -> Path | None:
    """The latest pretrain export, if pretraining is on; it must come from the same dataset."""
    if not cfg.pretrain.enabled:
        return None
    path = latest_version(model_dir(cfg.artifacts_root, cfg.run_name, "pretrain"), "pretrained model", "pretrain")
    trained_on = json.loads((path / "recsys.json").read_text())["dataset_path"]
    if Path(trained_on) != dataset.path:
        raise ValueError(
            f"the latest pretrained model {path} was trained on {trained_on}, not on {dataset.path}; "
            "run the pretrain stage again, or set pretrain.enabled: false"
        )
    return path


def finetune(cfg: RecsysConfig, dataset: PreparedDataset | None = None, init_from: Path | None = None):
    from recsys.train.trainer import run_stage

    dataset = dataset or latest_dataset(cfg)
    init_from = init_from or pretrained_model(cfg, dataset)
    return run_stage(cfg, "finetune", dataset, init_from=init_from)


def ctr(cfg: RecsysConfig, dataset: PreparedDataset | None = None, init_from: Path | None = None):
    """The CTR ranking stage: BCE on impressions, starting from the latest fine-tuned retrieval model."""
    from recsys.train.trainer import run_stage

    if not cfg.ctr.enabled:
        return None
    init_from = init_from or latest_finetuned(cfg)
    trained_on = Path(json.loads((init_from / "recsys.json").read_text())["dataset_path"])
    dataset = dataset or PreparedDataset(trained_on)
    return run_stage(cfg, "ctr", dataset, init_from=init_from)


def latest_ctr(cfg: RecsysConfig) -> Path | None:
    """The latest CTR export, or None when the ctr stage is off."""
    if not cfg.ctr.enabled:
        return None
    return latest_version(model_dir(cfg.artifacts_root, cfg.run_name, "ctr"), "CTR model", "ctr")


def latest_finetuned(cfg: RecsysConfig) -> Path:
    return latest_version(model_dir(cfg.artifacts_root, cfg.run_name, "finetune"), "fine-tuned model", "finetune")


def search(cfg: RecsysConfig, dataset: PreparedDataset | None = None) -> Path | None:
    """The search stage: contrastive fine-tuning of the text encoder on the logs' (query, clicked
    item) pairs. None when search is off or the logs hold no searches (Amazon Beauty): the index
    stage then embeds item texts with the pretrained encoder."""
    from recsys.search.train import train_search_encoder

    if not cfg.search.enabled:
        return None
    if dataset is None:  # the catalog the recommender was trained on, which the index pairs it with
        dataset = PreparedDataset(json.loads((latest_finetuned(cfg) / "recsys.json").read_text())["dataset_path"])
    return train_search_encoder(cfg, dataset)


def index(cfg: RecsysConfig, model_path: Path | None = None):
    """The index stage: the fine-tuned model's item vectors → a FAISS index version serving loads."""
    from recsys.index import build_index

    return build_index(cfg, model_path)


def build_servable(cfg: RecsysConfig) -> tuple:
    """prepare → pretrain → finetune → search → index on a running Ray: a version serving can load,
    from the raw logs (the benchmarks' setup). Returns (IndexRelease, seconds per stage)."""
    import time

    seconds, t = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        seconds[name], t = round(time.perf_counter() - t, 1), time.perf_counter()

    dataset = prepare(cfg)
    lap("prepare")
    pre = pretrain(cfg, dataset)
    lap("pretrain")
    fine = finetune(cfg, dataset, init_from=pre.model_path if pre else None)
    lap("finetune")
    search(cfg, dataset)
    lap("search")
    release = index(cfg, fine.model_path)
    lap("index")
    return release, seconds


def evaluate(cfg: RecsysConfig, model_path: Path | None = None) -> dict:
    from recsys.eval.evaluate import run_evaluation

    model_path = model_path or latest_finetuned(cfg)
    dataset = PreparedDataset(json.loads((model_path / "recsys.json").read_text())["dataset_path"])
    return run_evaluation(cfg, model_path, dataset, ctr_model_path=latest_ctr(cfg))
