"""The one training loop: every stage that trains (pretrain, finetune, ctr, the search encoder, and
the heads to come) runs this per-worker function under Ray Train's TorchTrainer. A stage supplies a
`TrainTask` (recsys.train.task: model, batches, loss, validation, export); the loop does the rest:

- DeepSpeed ZeRO 0–3 with a torch AdamW and the warm-up + cosine schedule;
- resume: a restarted worker group (or a rerun of the same run) continues after the last
  checkpoint's epoch, with the optimizer and schedule state;
- metrics reduced over every rank (means over all ranks' steps), the validation the same on every
  rank, early stopping on it;
- seeds from `numpy.random.default_rng([seed, epoch, rank])` (distinct for any number of workers);
- checkpoints every epoch: every rank's engine state (for resume) and the servable export, written
  by rank 0 from the gathered parameters (under ZeRO-3 each rank holds only a shard of them).

Everything arrives through `train_loop_config` (never globals): {"task": TrainTask, "cluster":
ClusterConfig, "fault": test hook or None}.

Checkpoint layout, reported through `ray.train.report`:
    deepspeed/state/...      engine + optimizer state from every rank (for resume)
    model/                   the task's export from rank 0 (e.g. config.json + model.safetensors)
    train_state.json         {"epoch": e, "metrics": {...}, "history": [metrics of every epoch so far],
                              "stopped_early": bool}
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


def export_gathered(engine, task, path: Path, zero_stage: int, is_rank0: bool) -> None:
    """The task's export of the full weights. Under ZeRO-3 parameters are partitioned across ranks:
    gather them first (every rank must enter), or rank 0 would write its empty shards."""
    import deepspeed

    if zero_stage == 3:
        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
            if is_rank0:
                task.export(engine.module, path)
    elif is_rank0:
        task.export(engine.module, path)


def _epoch_gauges() -> dict:
    """Prometheus gauges (Ray metrics, scraped from every node's metrics port) for the epoch curve."""
    from ray.util.metrics import Gauge

    tags = ("stage", "run")
    return {
        "loss": Gauge("recsys_train_loss", "mean training loss of the last epoch", tag_keys=tags),
        "sequences_per_s": Gauge("recsys_train_sequences_per_second", "training throughput, all ranks", tag_keys=tags),
        "epoch": Gauge("recsys_train_epoch", "last finished epoch", tag_keys=tags),
    }


def build_engine(model, stage_cfg, use_gpu: bool, total_steps: int):
    """DeepSpeed engine with a torch AdamW and the warm-up + cosine schedule (stepped by DeepSpeed at
    every optimizer step, i.e. after each accumulation boundary, and saved in its checkpoints)."""
    import deepspeed

    from recsys.train.deepspeed_config import deepspeed_config
    from recsys.train.schedule import lr_factor

    optimizer = torch.optim.AdamW(model.parameters(), lr=stage_cfg.lr, weight_decay=stage_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, stage_cfg))
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(stage_cfg, use_gpu)
    )
    return engine



def _best(history: list[dict], key: str) -> dict | None:
    scored = [h for h in history if h.get(key) is not None and not np.isnan(h[key])]
    return max(scored, key=lambda h: h[key]) if scored else None


def _reduced_means(sums: dict[str, float], steps: int, rows: int) -> tuple[dict[str, float], int, int]:
    """Per-step means of `sums` over every rank's steps, and the global step and row counts."""
    import torch.distributed as dist

    names = sorted(sums)
    totals = torch.tensor([sums[n] for n in names] + [steps, rows], dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(totals)
    all_steps, all_rows = int(totals[-2].item()), int(totals[-1].item())
    return {name: totals[i].item() / max(all_steps, 1) for i, name in enumerate(names)}, all_steps, all_rows


def _resume(engine, checkpoint) -> tuple[int, dict, list, bool]:
    """(first epoch to run, last metrics, history, finished) from a Ray Train checkpoint."""
    with checkpoint.as_directory() as folder:
        engine.load_checkpoint(os.path.join(folder, "deepspeed"), tag=STATE_TAG)
        state = json.loads(Path(folder, "train_state.json").read_text())
    return state["epoch"] + 1, state["metrics"], state["history"], bool(state.get("stopped_early"))


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train

    task = loop_config["task"]
    cluster = loop_config["cluster"]
    stage_cfg = task.stage_cfg
    torch.set_num_threads(max(1, int(cluster.cpus_per_worker)))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(stage_cfg.seed)  # same initial weights on every rank

    engine = build_engine(task.build_model(), stage_cfg, cluster.use_gpu, task.steps_per_epoch * stage_cfg.epochs)
    select_key = f"valid_{task.select_metric}" if task.select_metric else None

    start_epoch, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        start_epoch, last_metrics, history, finished = _resume(engine, checkpoint)
        if finished or start_epoch >= stage_cfg.epochs:
            # Already complete (a rerun of a finished run): hand back the final checkpoint.
            ray.train.report(last_metrics, checkpoint=checkpoint)
            return

    gauges = _epoch_gauges() if rank == 0 else {}
    gauge_tags = {"stage": task.stage, "run": ctx.get_experiment_name()}
    fault = loop_config.get("fault")
    for epoch in range(start_epoch, stage_cfg.epochs):
        engine.train()
        rng = np.random.default_rng([stage_cfg.seed, epoch, rank])
        t0, steps, rows = time.perf_counter(), 0, 0
        sums: dict[str, float] = {"loss": 0.0}
        waited, ready = 0.0, time.perf_counter()
        for batch in task.batches(epoch, rank, world):
            waited += time.perf_counter() - ready  # input pipeline time the step waited for
            _maybe_inject_fault(fault, epoch, steps, rank)
            loss, parts, n = task.loss(engine, batch, rng)
            engine.backward(loss)
            engine.step()
            sums["loss"] += float(loss.detach())
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value
            steps += 1
            rows += n
            ready = time.perf_counter()

        metrics, all_steps, all_rows = _reduced_means(sums, steps, rows)
        seconds = time.perf_counter() - t0
        metrics.update({
            "epoch": epoch,
            "steps": all_steps,
            "sequences_per_s": all_rows / seconds,  # rows of every rank (sequences, impressions or pairs)
            "epoch_seconds": seconds,
            "input_wait_seconds": waited,  # rank 0's; a large share means the step is input-bound
            "lr": engine.get_lr()[0],
            "stage": task.stage,
            "attempt_start_epoch": start_epoch,  # > 0 when this attempt resumed from a checkpoint
            "world_size": world,
            "zero_stage": stage_cfg.zero_stage,
        })
        stop = False
        if select_key is not None:
            engine.eval()
            t1 = time.perf_counter()
            with torch.no_grad():
                scores = task.validate(engine.module, rank, world)
            metrics.update({f"valid_{k}": v for k, v in scores.items()})
            metrics["valid_seconds"] = time.perf_counter() - t1
            best = _best([*history, metrics], select_key)
            metrics["best_epoch"] = best["epoch"] if best else epoch
            patience = task.early_stopping_patience
            stop = bool(patience) and epoch - metrics["best_epoch"] >= patience and epoch + 1 < stage_cfg.epochs
            metrics["stopped_early"] = stop
        metrics["finished_at"] = time.time()  # wall clock, for time-to-quality figures
        history.append(metrics)
        for name, gauge in gauges.items():
            if name in metrics:
                gauge.set(metrics[name], tags=gauge_tags)
        with tempfile.TemporaryDirectory() as tmp:
            engine.save_checkpoint(os.path.join(tmp, "deepspeed"), tag=STATE_TAG)
            export_gathered(engine, task, Path(tmp, "model"), stage_cfg.zero_stage, rank == 0)
            if rank == 0:
                Path(tmp, "train_state.json").write_text(
                    json.dumps({"epoch": epoch, "metrics": metrics, "history": history, "stopped_early": stop})
                )
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

        _maybe_inject_fault(fault, epoch, None, rank)
        if stop:
            break
