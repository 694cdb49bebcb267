"""Integration tests share one local Ray per session, and one tiny trained pipeline."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        "serve": {"port": free_port(), "max_k": 50},
    }


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from recsys.config import ClusterConfig
    from recsys.runtime import init_ray, quiet_ray_data

    init_ray(ClusterConfig(num_cpus=4, object_store_memory_mb=512))
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
