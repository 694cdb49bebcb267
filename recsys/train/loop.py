"""The per-worker training function run by Ray Train's TorchTrainer.

Everything arrives through `train_loop_config` (never globals): the validated config tree, the
stage name, the model's HF config, the item-attribute table and where to start from.

Checkpoint layout, written every epoch and reported through `ray.train.report`:
    deepspeed/state/...      engine + optimizer state from every rank (for resume)
    model/                   save_pretrained export from rank 0 (config.json + model.safetensors)
    train_state.json         {"epoch": e, "metrics": {...}, "history": [metrics of every epoch so far]}
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

STATE_TAG = "state"
BUCKET_WINDOW = 8  # batches per length-bucketing window


class InjectedFailure(RuntimeError):
    """Raised on purpose by tests (the `fault` hook) to exercise resume."""


def _maybe_inject_fault(fault: dict | None, epoch: int, step: int | None, rank: int) -> None:
    """Test hook: {"epoch": e, "step": s | None, "rank": r, "kind": "raise" | "exit", "marker": path}.

    `step` None fires after the epoch's checkpoint is reported; "exit" kills the worker process
    (as an OOM kill or a lost node would). It fires once per run: the marker file records that it
    did, so a restarted worker group runs through.
    """
    if not fault or fault["epoch"] != epoch or fault.get("step") != step or fault.get("rank", 0) != rank:
        return
    marker = Path(fault["marker"])
    if marker.exists():
        return
    marker.write_text(f"fault fired at epoch {epoch}, step {step}, rank {rank}\n")
    if fault["kind"] == "exit":
        os._exit(17)
    raise InjectedFailure(f"injected failure at epoch {epoch}, step {step} (test hook)")


def _build_model(loop_config: dict):
    from recsys.models import SeqRecConfig, SeqRecModel

    if loop_config.get("init_from"):
        model = SeqRecModel.from_pretrained(loop_config["init_from"])
    else:
        model = SeqRecModel(SeqRecConfig(**loop_config["model_config"]))
        model.set_item_attributes(torch.tensor(loop_config["item_attributes"]))
    return model


def _batch(histories, stage: str, model_config, stage_cfg, rng):
    from recsys.train.batches import masked_item_batch, next_item_batch

    if stage == "pretrain":
        return masked_item_batch(histories, model_config.max_seq_len, stage_cfg.mask_prob, model_config.mask_index, rng)
    return next_item_batch(histories, model_config.max_seq_len)


def _save_model(engine, path: Path, zero_stage: int, is_rank0: bool) -> None:
    import deepspeed

    if zero_stage == 3:
        # Parameters are partitioned across ranks: gather them (all ranks must enter) to export.
        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
            if is_rank0:
                engine.module.save_pretrained(path)
    elif is_rank0:
        engine.module.save_pretrained(path)


def _epoch_gauges() -> dict:
    """Prometheus gauges (Ray metrics, scraped from every node's metrics port) for the epoch curve."""
    from ray.util.metrics import Gauge

    tags = ("stage", "run")
    return {
        "loss": Gauge("recsys_train_loss", "mean training loss of the last epoch", tag_keys=tags),
        "sequences_per_s": Gauge("recsys_train_sequences_per_second", "training throughput, all ranks", tag_keys=tags),
        "epoch": Gauge("recsys_train_epoch", "last finished epoch", tag_keys=tags),
    }


def train_loop_per_worker(loop_config: dict) -> None:
    import deepspeed
    import ray.train
    import torch.distributed as dist

    from recsys.config import RecsysConfig
    from recsys.train.batches import length_bucketed
    from recsys.train.deepspeed_config import deepspeed_config

    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    cfg = RecsysConfig.model_validate(loop_config["recsys"])
    stage: str = loop_config["stage"]
    stage_cfg = getattr(cfg, stage)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(stage_cfg.seed)  # same initial weights on every rank

    model = _build_model(loop_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage_cfg.lr, weight_decay=stage_cfg.weight_decay)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(stage_cfg, cfg.cluster.use_gpu)
    )
    device = engine.device

    start_epoch, last_metrics, history = 0, {}, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            engine.load_checkpoint(os.path.join(folder, "deepspeed"), tag=STATE_TAG)
            state = json.loads(Path(folder, "train_state.json").read_text())
        start_epoch, last_metrics, history = state["epoch"] + 1, state["metrics"], state["history"]
        if start_epoch >= stage_cfg.epochs:
            # Already complete (a rerun of a finished run): hand back the final checkpoint.
            ray.train.report(last_metrics, checkpoint=checkpoint)
            return

    shard = ray.train.get_dataset_shard("train")
    gauges = _epoch_gauges() if rank == 0 else {}
    gauge_tags = {"stage": stage, "run": ctx.get_experiment_name()}
    for epoch in range(start_epoch, stage_cfg.epochs):
        engine.train()
        rng = np.random.default_rng(stage_cfg.seed * 1000 + epoch * 10 + rank)
        t0, loss_sum, steps, sequences = time.perf_counter(), 0.0, 0, 0
        windows = shard.iter_batches(
            batch_size=stage_cfg.batch_size * BUCKET_WINDOW,
            batch_format="numpy",
            local_shuffle_buffer_size=stage_cfg.batch_size * BUCKET_WINDOW * 2,
            local_shuffle_seed=stage_cfg.seed + epoch,
        )
        for histories in length_bucketed(windows, stage_cfg.batch_size, rng):
            _maybe_inject_fault(loop_config.get("fault"), epoch, steps, rank)
            inputs, labels = _batch(histories, stage, engine.module.config, stage_cfg, rng)
            loss = engine(inputs.to(device), labels=labels.to(device), causal=stage != "pretrain")
            engine.backward(loss)
            engine.step()
            loss_sum += float(loss.detach())
            steps += 1
            sequences += len(inputs)

        # Mean loss over every rank's steps, so the reported curve is the global one.
        totals = torch.tensor([loss_sum, steps, sequences], dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(totals)
        seconds = time.perf_counter() - t0
        metrics = {
            "epoch": epoch,
            "loss": totals[0].item() / max(totals[1].item(), 1),
            "steps": int(totals[1].item()),
            "sequences_per_s": totals[2].item() / seconds,
            "epoch_seconds": seconds,
            "stage": stage,
            "attempt_start_epoch": start_epoch,  # > 0 when this attempt resumed from a checkpoint
            "world_size": ctx.get_world_size(),
            "zero_stage": stage_cfg.zero_stage,
        }
        history.append(metrics)
        for name, gauge in gauges.items():
            gauge.set(metrics[name], tags=gauge_tags)
        with tempfile.TemporaryDirectory() as tmp:
            engine.save_checkpoint(os.path.join(tmp, "deepspeed"), tag=STATE_TAG)
            _save_model(engine, Path(tmp, "model"), stage_cfg.zero_stage, rank == 0)
            if rank == 0:
                Path(tmp, "train_state.json").write_text(
                    json.dumps({"epoch": epoch, "metrics": metrics, "history": history})
                )
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

        _maybe_inject_fault(loop_config.get("fault"), epoch, None, rank)
