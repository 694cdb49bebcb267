"""Ray Train + DeepSpeed ZeRO-2 on 2 CPU workers against a plain single-process torch loop.

Same model, same data (Amazon Beauty train split, or the synthetic shop without ../shared), same
batches (length-bucketed next-item pairs), in one run. The plain loop uses both cores (2 torch
threads) for one epoch; the Ray run uses 2 workers × 1 thread for two epochs and its second epoch
is the figure (the first includes warm-up: streaming-split start, first block reads). Throughput is
measured inside the epoch (the ~25 s fixed cost of starting a fit is reported separately).

    python -m benchmarks.train_throughput [--config configs/demo.yaml]
Writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from recsys import stages
from recsys.cli import config_parent
from recsys.config import load_config
from recsys.models import SeqRecConfig, SeqRecModel
from recsys.runtime import init_ray, quiet_ray_data
from recsys.train.batches import length_bucketed, next_item_batch
from recsys.train.seqrec_tasks import model_config_kwargs
from recsys.train.trainer import run_stage

OUT = Path(__file__).resolve().parent / "results" / "train_throughput.json"


def plain_torch_epoch(cfg, dataset) -> tuple[float, int]:
    """One epoch of the same objective in one process: (sequences/s, steps)."""
    torch.set_num_threads(2)
    torch.manual_seed(cfg.finetune.seed)
    model = SeqRecModel(SeqRecConfig(**model_config_kwargs(cfg, dataset)))
    model.set_item_attributes(torch.tensor(dataset.attribute_matrix(cfg.data.max_attributes_per_item)))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.finetune.lr)
    histories = [h for h in dataset.read_split("train")["items"] if len(h) >= 2]
    # The Ray run splits data over 2 workers with a per-worker batch: the same global batch here.
    batch_size = cfg.finetune.batch_size * cfg.cluster.train_workers
    rng = np.random.default_rng(0)
    windows = ({"items": np.array(histories[i : i + batch_size * 8], dtype=object)} for i in range(0, len(histories), batch_size * 8))
    start, steps, sequences = time.perf_counter(), 0, 0
    for batch in length_bucketed(windows, batch_size, rng):
        inputs, labels = next_item_batch(batch, cfg.data.max_seq_len)
        loss = model(inputs, labels=labels, causal=True).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.finetune.grad_clip)
        optimizer.step()
        steps += 1
        sequences += len(batch)
    return sequences / (time.perf_counter() - start), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[config_parent("configs/demo.yaml")])
    args = parser.parse_args()
    cfg = load_config(args.config, ["finetune.epochs=2", "finetune.zero_stage=2", "pretrain.enabled=false",
                                    "finetune.select_best=false", "finetune.early_stopping_patience=0",
                                    f"run_name=bench-throughput-{int(time.time())}", *args.overrides])
    init_ray(cfg.cluster)
    quiet_ray_data()
    dataset = stages.prepare(cfg)

    torch_sps, torch_steps = plain_torch_epoch(cfg, dataset)
    started = time.perf_counter()
    result = run_stage(cfg, "finetune", dataset)
    fit_s = time.perf_counter() - started
    ray_sps = result.metrics["sequences_per_s"]  # the last (second) epoch
    figures = {
        "dataset": f"{dataset.manifest['name']}/{dataset.manifest['version']}",
        "model": {k: v for k, v in model_config_kwargs(cfg, dataset).items() if k != "intermediate_size"},
        "global_batch": cfg.finetune.batch_size * cfg.cluster.train_workers,
        "ray_zero2_samples_per_s": round(ray_sps, 1),
        "zero_stage": cfg.finetune.zero_stage,
        "ray_workers": cfg.cluster.train_workers,
        "ray_steps": result.metrics["steps"],
        "ray_first_epoch_samples_per_s": round(result.metrics["history"][0]["sequences_per_s"], 1),
        "ray_fit_wall_s": round(fit_s, 1),
        "ray_epoch_s": round(result.metrics["epoch_seconds"], 1),
        "torch_samples_per_s": round(torch_sps, 1),
        "torch_threads": 2,  # both cores, as the 2 Ray workers use
        "torch_steps": torch_steps,
        # time per sample, Ray ÷ plain (> 1: Ray is slower per sample)
        "ratio": round(torch_sps / ray_sps, 3),
    }
    figures["overrides"] = args.overrides
    out = OUT if not args.overrides else OUT.with_name("train_throughput_ablation.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
