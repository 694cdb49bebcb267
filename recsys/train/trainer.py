"""Driver side of a training stage: build the TorchTrainer, fit, export the model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.train
from ray.train.torch import TorchTrainer

from recsys.artifacts import model_dir, publish_folder
from recsys.config import RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.train.loop import BUCKET_WINDOW, train_loop_per_worker
from recsys.train.schedule import optimizer_steps
from recsys.train.validation import SELECT_METRIC

STAGES = ("pretrain", "finetune", "ctr")


@dataclass
class StageResult:
    stage: str
    model_path: Path
    metrics: dict


def model_config_kwargs(cfg: RecsysConfig, dataset: PreparedDataset) -> dict:
    """The HF model config: architecture from `model`, sizes from the dataset's vocabularies."""
    m = cfg.model
    return {
        "num_items": dataset.num_items,
        "num_attributes": dataset.num_attributes,
        "max_attributes_per_item": cfg.data.max_attributes_per_item,
        "hidden_size": m.hidden_size,
        "num_layers": m.num_layers,
        "num_heads": m.num_heads,
        "intermediate_size": m.intermediate_size,
        "dropout": m.dropout,
        "max_seq_len": cfg.data.max_seq_len,
        "attribute_embeddings": m.attribute_embeddings,
    }


def run_name_for(cfg: RecsysConfig, stage: str, dataset: PreparedDataset, init_from: Path | None) -> str:
    """Same inputs → same name → a rerun resumes; any change → a fresh run."""
    key = {
        "dataset": str(dataset.path),
        "model": cfg.model.model_dump(mode="json"),
        "stage": getattr(cfg, stage).model_dump(mode="json"),
        "workers": cfg.cluster.train_workers,
        "init_from": str(init_from) if init_from else None,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.run_name}-{stage}-{digest}"


def training_dataset(cfg: RecsysConfig, stage: str, dataset: PreparedDataset) -> ray.data.Dataset:
    """The `train` split as the stage consumes it; Ray Train streams disjoint shards of it to workers."""
    if stage == "ctr":
        return ray.data.from_arrow(dataset.ctr_rows("train")).materialize()
    train = ray.data.read_parquet(dataset.split_dir("train"))
    if stage == "finetune":
        train = train.map_batches(_with_next_item_pairs, batch_format="pyarrow")
    if cfg.data.cache_train_split:
        train = train.materialize()
    return train


def run_stage(
    cfg: RecsysConfig,
    stage: str,
    dataset: PreparedDataset,
    init_from: Path | None = None,
    fault: dict | None = None,
) -> StageResult:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; use one of {STAGES}")
    stage_cfg = getattr(cfg, stage)
    train = training_dataset(cfg, stage, dataset)
    window = 1 if stage == "ctr" else BUCKET_WINDOW
    loop_config = {
        "recsys": cfg.model_dump(mode="json"),
        "stage": stage,
        "model_config": model_config_kwargs(cfg, dataset),
        "item_attributes": dataset.attribute_matrix(cfg.data.max_attributes_per_item),
        "init_from": str(init_from) if init_from else None,
        "threads": max(1, int(cfg.cluster.cpus_per_worker)),
        "steps_per_epoch": optimizer_steps(train.count(), cfg.cluster.train_workers, stage_cfg, window),
        "valid": validation_payload(stage, dataset) if stage_cfg.select_best else None,
        "item_counts": _item_counts(dataset) if stage_cfg.loss == "sampled_softmax" else None,
        "fault": fault,  # test hook, see loop._maybe_inject_fault
    }
    name = run_name_for(cfg, stage, dataset, init_from)
    select = f"valid_{SELECT_METRIC[stage]}" if loop_config["valid"] is not None else None
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.cluster.train_workers,
            use_gpu=cfg.cluster.use_gpu,
            resources_per_worker={"CPU": cfg.cluster.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(cfg.artifacts_root / "runs"),
            failure_config=ray.train.FailureConfig(max_failures=cfg.cluster.max_failures),
            # Ray keeps the best-scoring checkpoints and always the latest (which a restart resumes from).
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=select, checkpoint_score_order="max"
            ),
        ),
        datasets={"train": train},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{stage} run {name} finished without a checkpoint; see {result.path}")
    with result.checkpoint.as_directory() as folder:
        final_state = json.loads(Path(folder, "train_state.json").read_text())
    chosen = _best_checkpoint(result, select) if select else result.checkpoint
    with chosen.as_directory() as folder:
        state = json.loads(Path(folder, "train_state.json").read_text())
        # Same run and epoch → same version: a rerun that resumed a finished run re-points LATEST
        # at the existing export instead of minting a copy (which would also retrain what follows).
        version = f"{name.rsplit('-', 1)[-1]}-e{state['epoch']}"
        exported = publish_folder(
            Path(folder, "model"),
            model_dir(cfg.artifacts_root, cfg.run_name, stage),
            version,
            {
                "stage": stage,
                "run": name,
                "run_path": result.path,
                "dataset": dataset.manifest["name"] + "/" + dataset.manifest["version"],
                "dataset_path": str(dataset.path),
                "init_from": str(init_from) if init_from else None,
                "exported_epoch": state["epoch"],
                "selected_by": select or "last epoch",
                "final_epoch": final_state["epoch"],
                "stopped_early": final_state.get("stopped_early", False),
                "metrics": state["metrics"],
                "history": final_state["history"],
                "config": cfg.model_dump(mode="json"),
            },
        )
    return StageResult(stage, exported, {**state["metrics"], "history": final_state["history"]})


def _best_checkpoint(result, key: str):
    """The kept checkpoint with the highest `key` (ties: the earlier epoch)."""
    scored = [(m[key], -m["epoch"], c) for c, m in result.best_checkpoints if m.get(key) is not None]
    if not scored:
        return result.checkpoint
    return max(scored, key=lambda t: (t[0], t[1]))[2]


def validation_payload(stage: str, dataset: PreparedDataset) -> dict | None:
    """The valid split as plain arrays for the in-loop validation (see recsys/train/validation.py)."""
    if stage == "pretrain":
        return None
    if stage == "ctr":
        rows = dataset.ctr_rows("valid").to_pydict()
        return {
            "history": rows["history"],
            "candidate": np.asarray(rows["candidate"]),
            "context": np.stack([rows["hour"], rows["weekday"], rows["session_position"]], axis=1),
            "label": np.asarray(rows["label"], dtype=np.int8),
            "user": np.asarray(rows["user"]),
        }
    valid = dataset.read_split("valid")
    return {"history": [list(h) for h in valid["history"]], "target": np.asarray(valid["target"], dtype=np.int64)}


def _item_counts(dataset: PreparedDataset) -> list[float]:
    """Train interaction count per item index 0..N+1 (pad and [MASK] 0), for negative sampling."""
    items = dataset.items()
    counts = np.zeros(dataset.num_items + 2)
    counts[np.asarray(items["item_index"])] = np.asarray(items["train_count"], dtype=np.float64)
    return counts.tolist()


def _with_next_item_pairs(batch: pa.Table) -> pa.Table:
    """A history of one item has no next-item pair."""
    return batch.filter(pc.greater_equal(pc.list_value_length(batch["items"]), 2))
