"""Driver side of every training stage: the TorchTrainer around the one loop, the choice of the
epoch to export, and its publication as a typed ModelExport."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
from ray.train.torch import TorchTrainer

from recsys.artifacts import ArtifactStore, Dataset, ExportMeta, ModelExport
from recsys.config import RecsysConfig
from recsys.train.loop import train_loop_per_worker
from recsys.train.task import TrainTask


@dataclass
class StageResult:
    stage: str
    model_path: Path
    metrics: dict
    export: ModelExport


def run_name_for(cfg: RecsysConfig, task: TrainTask) -> str:
    """Same inputs → same name → a rerun resumes; any change → a fresh run."""
    digest = hashlib.sha256(json.dumps(task.run_key(), sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.run_name}-{task.stage}-{digest}"


def fit_and_publish(cfg: RecsysConfig, task: TrainTask, dataset: Dataset, train_data=None, fault: dict | None = None,
                    extra: dict | None = None, vet=None) -> StageResult:
    """Train `task` with the one loop on `cfg.cluster`'s workers, export its best (or last) epoch
    under models/<run_name>/<stage>/<version>, and return it. `vet(model folder) → dict`, when
    given, checks the chosen epoch's model before it is published; its answer goes into the
    export's `extra` (e.g. the search adaptation's safeguard)."""
    if task.uses_train_dataset and train_data is None:
        raise ValueError(f"the {task.stage} task streams a Ray Dataset: pass train_data")
    name = run_name_for(cfg, task)
    select = f"valid_{task.select_metric}" if task.select_metric else None
    store = ArtifactStore.of(cfg)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"task": task, "cluster": cfg.cluster, "fault": fault},  # fault: test hook (loop._maybe_inject_fault)
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.cluster.train_workers,
            use_gpu=cfg.cluster.use_gpu,
            resources_per_worker={"CPU": cfg.cluster.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(store.runs()),
            failure_config=ray.train.FailureConfig(max_failures=cfg.cluster.max_failures),
            # Ray keeps the best-scoring checkpoints and always the latest (which a restart resumes from).
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=select, checkpoint_score_order="max"
            ),
        ),
        datasets={"train": train_data} if train_data is not None else None,
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{task.stage} run {name} finished without a checkpoint; see {result.path}")
    with result.checkpoint.as_directory() as folder:
        final_state = json.loads(Path(folder, "train_state.json").read_text())
    chosen = _best_checkpoint(result, select) if select else result.checkpoint
    with chosen.as_directory() as folder:
        state = json.loads(Path(folder, "train_state.json").read_text())
        if vet is not None:
            extra = {**(extra or {}), **vet(Path(folder, "model"))}
        # Same run and epoch → same version: a rerun that resumed a finished run re-points LATEST
        # at the existing export instead of minting a copy (which would also retrain what follows).
        version = f"{name.rsplit('-', 1)[-1]}-e{state['epoch']}"
        meta = ExportMeta(
            stage=task.stage,
            run=name,
            run_path=result.path,
            dataset=dataset.manifest["name"] + "/" + dataset.manifest["version"],
            dataset_path=str(dataset.path),
            init_from=getattr(task, "init_from", None),
            exported_epoch=state["epoch"],
            selected_by=select or "last epoch",
            final_epoch=final_state["epoch"],
            stopped_early=final_state.get("stopped_early", False),
            metrics=state["metrics"],
            history=final_state["history"],
            config=cfg.model_dump(mode="json"),
            extra=extra or {},
        )
        export = store.publish_model(task.stage, Path(folder, "model"), version, meta)
    return StageResult(task.stage, export.path, {**state["metrics"], "history": final_state["history"]}, export)


def _best_checkpoint(result, key: str):
    """The kept checkpoint with the highest `key` (ties: the earlier epoch)."""
    scored = [(m[key], -m["epoch"], c) for c, m in result.best_checkpoints if m.get(key) is not None]
    if not scored:
        return result.checkpoint
    return max(scored, key=lambda t: (t[0], t[1]))[2]


def run_stage(cfg: RecsysConfig, stage: str, dataset: Dataset, init_from: Path | None = None,
              fault: dict | None = None) -> StageResult:
    """One recommender stage (pretrain, finetune or ctr) on a prepared dataset."""
    from recsys.train.seqrec_tasks import seqrec_task, training_dataset

    train = training_dataset(cfg, stage, dataset)
    task = seqrec_task(cfg, stage, dataset, init_from, train.count())
    return fit_and_publish(cfg, task, dataset, train, fault)
