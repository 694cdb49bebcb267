"""The per-worker training function run by Ray Train's TorchTrainer.

Everything arrives through `train_loop_config` (never globals): the validated config tree, the
stage name, the model's HF config, the item-attribute table, where to start from, the steps per
epoch (for the lr schedule), the valid split (for best-epoch selection) and item counts (for
sampled softmax).

Checkpoint layout, written every epoch and reported through `ray.train.report`:
    deepspeed/state/...      engine + optimizer state from every rank (for resume)
    model/                   save_pretrained export from rank 0 (config.json + model.safetensors)
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


def build_model(loop_config: dict):
    from recsys.models import SeqRecConfig, SeqRecForCTR, SeqRecModel

    init_from = loop_config.get("init_from")
    if loop_config["stage"] == "ctr":
        if init_from:
            return SeqRecForCTR.from_retrieval_model(init_from)
        model = SeqRecForCTR(SeqRecConfig(**loop_config["model_config"]))
        model.seqrec.set_item_attributes(torch.tensor(loop_config["item_attributes"]))
        return model
    if init_from:
        return SeqRecModel.from_pretrained(init_from)
    model = SeqRecModel(SeqRecConfig(**loop_config["model_config"]))
    model.set_item_attributes(torch.tensor(loop_config["item_attributes"]))
    return model


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


class NegativeSampler:
    """Shared negatives for sampled softmax, drawn ∝ (train_count + 1)^power, and log Q = log(S · q)."""

    def __init__(self, item_counts: list, num_negatives: int, power: float):
        counts = np.asarray(item_counts, dtype=np.float64)
        q = (counts + 1.0) ** power
        q[0] = q[-1] = 0.0  # padding and [MASK] are never drawn
        self.q = q / q.sum()
        self.num_negatives = num_negatives
        with np.errstate(divide="ignore"):
            self.log_q = torch.tensor(np.log(num_negatives * self.q), dtype=torch.float32)

    def draw(self, rng: np.random.Generator) -> torch.Tensor:
        return torch.from_numpy(rng.choice(len(self.q), size=self.num_negatives, p=self.q))


def _sequence_steps(shard, stage_cfg, epoch: int):
    """Length-bucketed batches. The bucket order comes from an rng shared by all ranks, so at each
    step every rank takes the bucket at the same length quantile of its own window: ranks of a
    data-parallel step then do about the same work and none idles at the gradient all-reduce
    (with per-rank orders, a rank with short sequences waited for one with long ones: measured
    0.5–0.7 busy cores of 1 per worker on Beauty)."""
    from recsys.train.batches import length_bucketed

    rng = np.random.default_rng([stage_cfg.seed, epoch])
    windows = shard.iter_batches(
        batch_size=stage_cfg.batch_size * BUCKET_WINDOW,
        batch_format="numpy",
        local_shuffle_buffer_size=stage_cfg.batch_size * BUCKET_WINDOW * 2,
        local_shuffle_seed=stage_cfg.seed + epoch,
    )
    return length_bucketed(windows, stage_cfg.batch_size, rng)


def _ctr_steps(shard, stage_cfg, epoch: int):
    return shard.iter_batches(
        batch_size=stage_cfg.batch_size,
        batch_format="numpy",
        local_shuffle_buffer_size=stage_cfg.batch_size * 4,
        local_shuffle_seed=stage_cfg.seed + epoch,
    )


def _step_loss(engine, stage: str, batch, stage_cfg, sampler, rng, device) -> tuple[torch.Tensor, dict, int]:
    """Forward one micro-batch: (loss, {part: float}, rows)."""
    from recsys.models.seqrec import left_pad
    from recsys.train.batches import masked_item_batch, next_item_batch

    config = engine.module.config
    if stage == "ctr":
        inputs = left_pad(list(batch["history"]), config.max_seq_len).to(device)
        context = np.stack([batch["hour"], batch["weekday"], batch["session_position"]], axis=1).astype(np.int64)
        out = engine(inputs, torch.from_numpy(batch["candidate"].astype(np.int64)).to(device),
                     torch.from_numpy(context).to(device), labels=torch.from_numpy(batch["label"]).to(device))
        return out.loss, {}, len(inputs)
    if stage == "pretrain":
        inputs, labels = masked_item_batch(batch, config.max_seq_len, stage_cfg.mask_prob, config.mask_index, rng)
        out = engine(inputs.to(device), labels=labels.to(device), causal=False,
                     attribute_loss_weight=stage_cfg.attribute_loss_weight)
    else:
        inputs, labels = next_item_batch(batch, config.max_seq_len)
        negatives = sampler.draw(rng).to(device) if sampler else None
        out = engine(inputs.to(device), labels=labels.to(device), causal=True, negatives=negatives,
                     log_q=sampler.log_q.to(device) if sampler else None)
    parts = {name: float(getattr(out, name).detach()) for name in ("item_loss", "attribute_loss")
             if getattr(out, name) is not None}
    return out.loss, parts, len(inputs)


def _best(history: list[dict], key: str) -> dict | None:
    scored = [h for h in history if h.get(key) is not None and not np.isnan(h[key])]
    return max(scored, key=lambda h: h[key]) if scored else None


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import torch.distributed as dist

    from recsys.config import RecsysConfig
    from recsys.train.validation import SELECT_METRIC, validate

    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    cfg = RecsysConfig.model_validate(loop_config["recsys"])
    stage: str = loop_config["stage"]
    stage_cfg = getattr(cfg, stage)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(stage_cfg.seed)  # same initial weights on every rank

    total_steps = loop_config["steps_per_epoch"] * stage_cfg.epochs
    engine = build_engine(build_model(loop_config), stage_cfg, cfg.cluster.use_gpu, total_steps)
    device = engine.device
    sampler = None
    if stage == "finetune" and stage_cfg.loss == "sampled_softmax":
        sampler = NegativeSampler(loop_config["item_counts"], stage_cfg.num_negatives, stage_cfg.negative_sampling_power)
    valid = loop_config.get("valid")
    select_key = f"valid_{SELECT_METRIC[stage]}" if valid is not None else None

    start_epoch, last_metrics, history = 0, {}, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            engine.load_checkpoint(os.path.join(folder, "deepspeed"), tag=STATE_TAG)
            state = json.loads(Path(folder, "train_state.json").read_text())
        start_epoch, last_metrics, history = state["epoch"] + 1, state["metrics"], state["history"]
        if start_epoch >= stage_cfg.epochs or state.get("stopped_early"):
            # Already complete (a rerun of a finished run): hand back the final checkpoint.
            ray.train.report(last_metrics, checkpoint=checkpoint)
            return

    shard = ray.train.get_dataset_shard("train")
    gauges = _epoch_gauges() if rank == 0 else {}
    gauge_tags = {"stage": stage, "run": ctx.get_experiment_name()}
    for epoch in range(start_epoch, stage_cfg.epochs):
        engine.train()
        rng = np.random.default_rng(stage_cfg.seed * 1000 + epoch * 10 + rank)
        t0, steps, sequences = time.perf_counter(), 0, 0
        sums: dict[str, float] = {"loss": 0.0}
        batches = _ctr_steps(shard, stage_cfg, epoch) if stage == "ctr" else _sequence_steps(shard, stage_cfg, epoch)
        waited, ready = 0.0, time.perf_counter()
        for batch in batches:
            waited += time.perf_counter() - ready  # input pipeline time the step waited for
            _maybe_inject_fault(loop_config.get("fault"), epoch, steps, rank)
            loss, parts, rows = _step_loss(engine, stage, batch, stage_cfg, sampler, rng, device)
            engine.backward(loss)
            engine.step()
            sums["loss"] += float(loss.detach())
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value
            steps += 1
            sequences += rows
            ready = time.perf_counter()

        # Means over every rank's steps, so the reported curve is the global one.
        names = sorted(sums)
        totals = torch.tensor([sums[n] for n in names] + [steps, sequences], dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(totals)
        seconds = time.perf_counter() - t0
        metrics = {name: totals[i].item() / max(totals[-2].item(), 1) for i, name in enumerate(names)}
        metrics.update({
            "epoch": epoch,
            "steps": int(totals[-2].item()),
            "sequences_per_s": totals[-1].item() / seconds,
            "epoch_seconds": seconds,
            "input_wait_seconds": waited,  # rank 0's; a large share means the step is input-bound
            "lr": engine.get_lr()[0],
            "stage": stage,
            "attempt_start_epoch": start_epoch,  # > 0 when this attempt resumed from a checkpoint
            "world_size": world,
            "zero_stage": stage_cfg.zero_stage,
        })
        stop = False
        if valid is not None:
            engine.eval()
            t1 = time.perf_counter()
            scores = validate(stage, engine.module, valid, cfg.eval, rank, world)
            metrics.update({f"valid_{k}": v for k, v in scores.items()})
            metrics["valid_seconds"] = time.perf_counter() - t1
            best = _best([*history, metrics], select_key)
            metrics["best_epoch"] = best["epoch"] if best else epoch
            patience = stage_cfg.early_stopping_patience
            stop = bool(patience) and epoch - metrics["best_epoch"] >= patience and epoch + 1 < stage_cfg.epochs
            metrics["stopped_early"] = stop
        metrics["finished_at"] = time.time()  # wall clock, for time-to-quality figures
        history.append(metrics)
        for name, gauge in gauges.items():
            if name in metrics:
                gauge.set(metrics[name], tags=gauge_tags)
        with tempfile.TemporaryDirectory() as tmp:
            engine.save_checkpoint(os.path.join(tmp, "deepspeed"), tag=STATE_TAG)
            _save_model(engine, Path(tmp, "model"), stage_cfg.zero_stage, rank == 0)
            if rank == 0:
                Path(tmp, "train_state.json").write_text(
                    json.dumps({"epoch": epoch, "metrics": metrics, "history": history, "stopped_early": stop})
                )
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

        _maybe_inject_fault(loop_config.get("fault"), epoch, None, rank)
        if stop:
            break
