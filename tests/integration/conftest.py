"""Integration tests share one local Ray per session, and one tiny trained pipeline."""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items):
    """Tests that add items to the served catalog run last, so parity tests see the trained catalog."""
    items.sort(key=lambda item: item.get_closest_marker("mutates_catalog") is not None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_ingress() -> str:
    """HAProxy ingress where the binary is installed (.ci/run installs it), else Serve's proxy."""
    return "haproxy" if shutil.which("haproxy") else "proxy"


def tiny_config_dict(root: Path) -> dict:
    """A shop and model small enough that every stage takes seconds on 2 cores."""
    return {
        "run_name": "it",
        "artifacts": {"root": str(root)},
        "cluster": {"num_cpus": 4, "train_workers": 2, "cpus_per_worker": 1},
        "data": {"source": "synthetic", "synthetic": {"num_users": 400, "num_items": 80, "seed": 1}, "max_seq_len": 12},
        "model": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "dropout": 0.0},
        "pretrain": {"epochs": 1, "batch_size": 32, "lr": 0.01, "zero_stage": 2, "attribute_loss_weight": 0.5},
        "finetune": {"epochs": 3, "batch_size": 32, "lr": 0.01, "zero_stage": 2},
        "eval": {"ks": [5, 10]},
        "search": {"train": {"epochs": 2, "batch_size": 16, "lr": 1e-4, "zero_stage": 2}, "candidates": 40},
        "serve": {"port": free_port(), "max_k": 50, "candidates": 30, "ingress": serve_ingress()},
        "forecast": {"model": "neural", "horizon": 2, "max_horizon": 4, "window_weeks": 6, "members": 2, "backtest": {"enabled": False},
                     "train": {"epochs": 2, "batch_size": 32}},
        "ads": {"enabled": True, "world": {"campaigns": 20, "advertisers": 5, "requests_per_day": 800, "logged_days": 3},
                "train": {"epochs": 1, "batch_size": 128}},
    }


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from recsys.config import ClusterConfig, ServeConfig
    from recsys.runtime import init_ray, quiet_ray_data

    # Serve drains replicas and proxies for 30 s before shutdown by default; tests need not wait.
    for name in ("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S"):
        os.environ.setdefault(name, "1")
    init_ray(ClusterConfig(num_cpus=4, object_store_memory_mb=512), serve=ServeConfig(ingress=serve_ingress()))
    quiet_ray_data()
    yield
    ray.shutdown()


@dataclass
class TinyRun:
    config_path: Path
    cfg: object
    dataset: object
    pretrained: object
    failure: BaseException
    finetuned: object


@pytest.fixture(scope="session")
def tiny_run(ray_session, tmp_path_factory) -> TinyRun:
    """prepare → pretrain → finetune that crashes after epoch 0 → the same finetune again (resumes)."""
    from recsys import stages
    from recsys.config import load_config
    from recsys.train.trainer import run_stage

    root = tmp_path_factory.mktemp("artifacts")
    config_path = root / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config_dict(root)))
    cfg = load_config(config_path)
    dataset = stages.prepare(cfg)
    pretrained = stages.pretrain(cfg, dataset)
    with pytest.raises(Exception) as failure:  # noqa: PT011 - Ray wraps the worker error
        run_stage(cfg, "finetune", dataset, init_from=pretrained.model_path, fault={"epoch": 0, "kind": "raise", "marker": str(root / "fault-fired")})
    finetuned = stages.finetune(cfg, dataset)
    return TinyRun(config_path, cfg, dataset, pretrained, failure.value, finetuned)


@dataclass
class Served:
    base: str
    cfg: object
    config_path: Path
    current: object  # IndexRelease served at start: fine-tuned model + CTR ranker
    other: object  # IndexRelease of another model version (the pretrained encoder, retrieval ranker)
    ctr_path: Path

    def wait_ready(self, path: str = "/readyz") -> None:
        from serving.deploy import wait_ready

        wait_ready(self.base + path, timeout_s=60)


def publish_untrained_ctr(cfg, finetuned: Path) -> Path:
    """A CTR ranker initialised from the fine-tuned model, published like the ctr stage does.
    Its head is untrained: serving tests check the mechanics (parity, explanations, swap); the
    ctr stage's learning is test_training's business."""
    from recsys.artifacts import ArtifactStore, ModelExport
    from recsys.models import SeqRecForCTR

    scratch = Path(cfg.artifacts_root) / "scratch-ctr"
    SeqRecForCTR.from_retrieval_model(finetuned).save_pretrained(scratch)
    meta = ModelExport.load(finetuned).meta.model_copy(update={"stage": "ctr", "init_from": str(finetuned)})
    return ArtifactStore.of(cfg).publish_model("ctr", scratch, "untrained-head", meta).path


@pytest.fixture(scope="session")
def search_encoder(tiny_run):
    """The search stage on the tiny shop (the index stage needs its encoder): a StageResult."""
    from recsys import stages

    return stages.search(tiny_run.cfg, tiny_run.dataset)


@pytest.fixture(scope="session")
def served(tiny_run, search_encoder) -> Served:
    """Serve running the tiny run: the fine-tuned model + CTR ranker, with a second published version to swap to."""
    from ray import serve

    from recsys import stages
    from recsys.config import load_config
    from serving.deploy import deploy_config, wait_ready
    from serving.serve_config import http_options, serve_config

    retrieval_only = load_config(tiny_run.config_path, ["serve.ranker=retrieval"])
    other = stages.index(retrieval_only, tiny_run.pretrained.model_path)
    ctr_path = publish_untrained_ctr(tiny_run.cfg, tiny_run.finetuned.model_path)
    current = stages.index(tiny_run.cfg, tiny_run.finetuned.model_path)
    assert current.manifest["ranker_path"] == str(ctr_path)
    stages.forecast(tiny_run.cfg, tiny_run.dataset)  # what /forecast serves (loaded at the replica's start)
    stages.ads(tiny_run.cfg)  # what /ads serves: the ad world and its calibrated pCTR model
    cfg = tiny_run.cfg
    serve.start(http_options=http_options(cfg.serve))
    deploy_config(serve_config(cfg, str(tiny_run.config_path), current.version))
    base = f"http://127.0.0.1:{cfg.serve.port}"
    wait_ready(base + "/readyz")
    yield Served(base, cfg, tiny_run.config_path, current, other, ctr_path)
    serve.shutdown()

