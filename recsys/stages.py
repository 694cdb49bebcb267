"""The pipeline stages as library calls; `ray_jobs/`, the CLI and the demo are thin over these.

Each stage finds its inputs in the artifact store by config (`ArtifactStore.latest`), so stages
can run as separate `ray job submit` calls, on different machines, in any later session. This is
the orchestration layer: task modules (recsys.train, eval, index, search, k8s) never import it.
"""

from __future__ import annotations

from pathlib import Path

from recsys.artifacts import ArtifactStore, Dataset, IndexRelease, ModelExport
from recsys.config import RecsysConfig
from recsys.entrypoints import PIPELINE_STAGES  # noqa: F401 - re-exported: the stages, in order

__all__ = ["PIPELINE_STAGES", "ads", "build_servable", "ctr", "evaluate", "finetune", "forecast", "index", "latest_dataset",
           "prepare", "pretrain", "pretraining_run", "search"]


def prepare(cfg: RecsysConfig) -> Dataset:
    from recsys.data.pipeline import prepare_dataset

    return prepare_dataset(cfg)


def latest_dataset(cfg: RecsysConfig) -> Dataset:
    from recsys.data.sources import dataset_name

    return ArtifactStore.of(cfg).latest("dataset", dataset_name=dataset_name(cfg))


def pretraining_run(cfg: RecsysConfig, dataset: Dataset) -> tuple[RecsysConfig, Dataset]:
    """The config and dataset the pretrain stage trains on: this shop's own, or, with
    `pretrain.pool_with`, the pooled training periods of this shop and the listed ones
    (recsys/data/pooled.py), under the run `<run_name>-pooled` with this config's model and
    pretrain settings. Deterministic: finetune calls it again to find the pooled model."""
    if not cfg.pretrain.pool_with:
        return cfg, dataset
    import hashlib

    from recsys.config import load_config, validate_config
    from recsys.data.pooled import pool_logs, pooled_config

    missing = [path for path in cfg.pretrain.pool_with if not Path(path).is_file()]
    if missing:  # checked here, not at config load: a serving pod has no use for the other shops' files
        raise FileNotFoundError(f"pretrain.pool_with: no config file at {missing} (paths are relative to the working "
                                "directory); give the paths of the other shops' configs")
    shops = [dataset] + [prepare(load_config(path, [f"artifacts.root={cfg.artifacts_root}"])) for path in cfg.pretrain.pool_with]
    key = hashlib.sha256("|".join(str(d.path) for d in shops).encode()).hexdigest()[:12]
    events, catalog = pool_logs(shops, cfg.artifacts_root / "pooled_logs" / key)
    raw = cfg.model_dump(mode="json")
    raw["pretrain"]["pool_with"] = []
    name = "pooled-" + "-".join(sorted(d.manifest["name"] for d in shops))
    pooled = validate_config(pooled_config(raw, events, catalog, name) | {"run_name": f"{cfg.run_name}-pooled"})
    return pooled, prepare(pooled)


def pretrain(cfg: RecsysConfig, dataset: Dataset | None = None):
    """Masked-item pretraining on this shop's training split, or on the pooled logs of several
    shops (`pretrain.pool_with`)."""
    from recsys.train.trainer import run_stage

    if not cfg.pretrain.enabled:
        return None
    on_cfg, on_data = pretraining_run(cfg, dataset or latest_dataset(cfg))
    return run_stage(on_cfg, "pretrain", on_data)


def finetune(cfg: RecsysConfig, dataset: Dataset | None = None, init_from: Path | None = None):
    """Next-item fine-tuning, from the latest model pretrained for this dataset when pretraining is
    on (a pooled one is matched to this shop's vocabulary by item id: recsys/train/transfer.py)."""
    from recsys.train.trainer import run_stage

    dataset = dataset or latest_dataset(cfg)
    if init_from is None and cfg.pretrain.enabled:
        on_cfg, on_data = pretraining_run(cfg, dataset)
        init_from = ArtifactStore.of(on_cfg).latest("pretrain", trained_on=on_data).path
    return run_stage(cfg, "finetune", dataset, init_from=init_from)


def ctr(cfg: RecsysConfig, dataset: Dataset | None = None, init_from: Path | None = None):
    """The CTR ranking stage: BCE on impressions, starting from the latest fine-tuned retrieval model."""
    from recsys.train.trainer import run_stage

    if not cfg.ctr.enabled:
        return None
    store = ArtifactStore.of(cfg)
    start = store.load("finetune", init_from) if init_from else store.latest("finetune")
    return run_stage(cfg, "ctr", dataset or start.dataset(), init_from=start.path)


def ads(cfg: RecsysConfig, init_from: Path | None = None):
    """The ads stage: the ad world over the shop, the pCTR model fine-tuned from the latest retrieval
    model (BCE on ad impressions), calibrated on the valid day (recsys/ads/stage.py). None when off."""
    from recsys.ads.stage import train_ads

    if not cfg.ads.enabled:
        return None
    return train_ads(cfg, init_from)


def search(cfg: RecsysConfig, dataset: Dataset | None = None):
    """The search stage: contrastive fine-tuning of the text encoder on the logs' (query, clicked
    item) pairs, or, when the logs hold none and `search.adapt.enabled`, on the catalog's own
    pseudo-queries. None when search is off or there is nothing to train on (Amazon Beauty): the
    index stage then embeds item texts with the pretrained encoder."""
    from recsys.search.adapt import adapt_encoder
    from recsys.search.train import train_search_encoder

    if not cfg.search.enabled:
        return None
    # the catalog the recommender was trained on, which the index pairs it with
    dataset = dataset or ArtifactStore.of(cfg).latest("finetune").dataset()
    result = train_search_encoder(cfg, dataset)
    if result is None and cfg.search.adapt.enabled:
        result = adapt_encoder(cfg, dataset)
    return result


def index(cfg: RecsysConfig, model_path: Path | None = None) -> IndexRelease:
    """The index stage: the fine-tuned model's item vectors → a FAISS index version serving loads."""
    from recsys.index import build_index

    store = ArtifactStore.of(cfg)
    model = ModelExport.load(model_path) if model_path else store.latest("finetune")
    if model.stage not in ("pretrain", "finetune"):  # a retrieval model: its item vectors are what the index holds
        raise ValueError(f"{model.path} is a {model.stage} export; the index is built from a finetune (or pretrain) export")
    return build_index(cfg, model)


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

    store = ArtifactStore.of(cfg)
    model = store.load("finetune", model_path) if model_path else store.latest("finetune")
    # the ranker the index pairs with this model: a CTR export fine-tuned from it
    ranker = store.latest("ctr", init_from=model.path, required=False) if cfg.ctr.enabled else None
    release = store.latest("index", required=False)  # the served path too, when it serves this model
    if release is not None and release.model_path.resolve() != model.path:
        release = None
    return run_evaluation(cfg, model, ranker, release)


def forecast(cfg: RecsysConfig, dataset: Dataset | None = None):
    """The forecast stage: weekly demand per product from the dataset's sales, every forecaster
    backtested, the default one published for /forecast (recsys/forecast/stage.py). None when off."""
    from recsys.forecast.stage import run_forecast

    if not cfg.forecast.enabled:
        return None
    return run_forecast(cfg, dataset or latest_dataset(cfg))
