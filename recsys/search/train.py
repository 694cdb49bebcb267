"""Contrastive fine-tuning of the search encoder on (query, clicked or purchased item) pairs from
the logs, on Ray Train with the same DeepSpeed ZeRO path as the recommender (`build_engine`).

Loss: symmetric InfoNCE with in-batch negatives (query→item and item→query), at
`search.temperature`; another pair in the batch with the same item is not a negative (masked).
Every rank gets the same number of equal-size batches per epoch (a shared shuffle, cut to a
multiple of world × batch), so the ZeRO collectives stay in step. The pairs are small (one row per
search), so they travel in the loop config rather than as a Ray Dataset.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from recsys.config import RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.search.encoder import row_text

STAGE = "search"


def search_examples(dataset: PreparedDataset, splits: tuple[str, ...], columns: list[str]) -> dict:
    """Columns of examples/search rows in `splits` (empty lists when the logs hold no searches)."""
    folder = dataset.split_dir("examples/search")
    if not Path(folder).exists():
        return {c: [] for c in columns}
    return pq.read_table(folder, columns=columns, filters=[("split", "in", list(splits))]).to_pydict()


def search_pairs(dataset: PreparedDataset, split: str) -> list[dict]:
    """(query, item index, item text) of one split of examples/search ([] when the logs hold no searches)."""
    ex = search_examples(dataset, (split,), ["query", "item"])
    if not ex["item"]:
        return []
    items = pq.read_table(dataset.path / "items.parquet", columns=["item_index", "title", "category", "brand", "attributes"]).to_pylist()
    texts = {r["item_index"]: row_text(r) for r in items}
    return [{"query": q, "item": int(i), "text": texts[i]} for q, i in zip(ex["query"], ex["item"], strict=True) if i in texts]


def contrastive_loss(q: torch.Tensor, d: torch.Tensor, items: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = q @ d.T / temperature
    same = items[:, None] == items[None, :]
    logits = logits.masked_fill(same & ~torch.eye(len(items), dtype=torch.bool, device=q.device), float("-inf"))
    target = torch.arange(len(items), device=q.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def search_loop_per_worker(loop_config: dict) -> None:
    import ray.train

    from recsys.search.encoder import TextEncoder
    from recsys.train.loop import build_engine

    torch.set_num_threads(1)
    cfg = RecsysConfig.model_validate(loop_config["recsys"])
    stage_cfg = cfg.search.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(stage_cfg.seed)
    pairs = loop_config["pairs"]
    per_step = world * stage_cfg.batch_size
    steps = len(pairs) // per_step
    encoder = TextEncoder(loop_config["init_from"])
    engine = build_engine(encoder, stage_cfg, cfg.cluster.use_gpu, steps * stage_cfg.epochs)
    rng = np.random.default_rng(stage_cfg.seed)  # shared: every rank draws the same order
    for epoch in range(stage_cfg.epochs):
        started, total = time.perf_counter(), 0.0
        order = rng.permutation(len(pairs))[: steps * per_step].reshape(steps, world, stage_cfg.batch_size)
        engine.train()
        for step in range(steps):
            batch = [pairs[i] for i in order[step, rank]]
            tq = encoder.tokenize([b["query"] for b in batch], cfg.search.max_tokens)
            td = encoder.tokenize([b["text"] for b in batch], cfg.search.max_tokens)
            loss = contrastive_loss(engine(**tq), engine(**td), torch.tensor([b["item"] for b in batch]), cfg.search.temperature)
            engine.backward(loss)
            engine.step()
            total += float(loss)
        metrics = {"epoch": epoch, "loss": total / max(steps, 1), "steps": steps, "epoch_seconds": time.perf_counter() - started}
        with tempfile.TemporaryDirectory() as folder:
            if rank == 0:
                engine.module.save(Path(folder) / "encoder")
                Path(folder, "train_state.json").write_text(json.dumps(metrics))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if rank == 0 else None)


def encoder_for(cfg: RecsysConfig, dataset: PreparedDataset) -> tuple[Path, str]:
    """(encoder folder, "fine-tuned" | "pretrained") for a catalog: the latest search-stage export
    trained on this dataset; the bundled MiniLM when the logs hold no searches to fine-tune on."""
    from recsys.artifacts import model_dir
    from recsys.search.encoder import pretrained_path

    parent = model_dir(cfg.artifacts_root, cfg.run_name, STAGE)
    pointer = parent / "LATEST"
    if pointer.is_file():
        path = parent / pointer.read_text().strip()
        if Path(json.loads((path / "recsys.json").read_text())["dataset_path"]) == dataset.path:
            return path, "fine-tuned"
    if search_examples(dataset, ("train",), ["item"])["item"]:
        raise FileNotFoundError(
            f"{dataset.path} has search logs but no search encoder was fine-tuned on it under {parent}; "
            "run the search stage first (recsys search --config <file>), or set search.enabled: false"
        )
    return pretrained_path(), "pretrained"


def train_search_encoder(cfg: RecsysConfig, dataset: PreparedDataset) -> Path | None:
    """Fine-tune from the bundled MiniLM, publish the encoder under models/<run>/search/<version>.
    None when the logs hold no searches (the index then embeds with the pretrained encoder)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from recsys.artifacts import model_dir, publish_folder
    from recsys.search.encoder import pretrained_path

    pairs = search_pairs(dataset, "train")
    if not pairs:
        return None
    need = cfg.cluster.train_workers * cfg.search.train.batch_size
    if len(pairs) < need:
        raise ValueError(
            f"{dataset.path} has {len(pairs)} training search pairs (examples/search), fewer than one step needs "
            f"({cfg.cluster.train_workers} workers × search.train.batch_size {cfg.search.train.batch_size}); lower the batch size"
        )
    run = f"{cfg.run_name}-{STAGE}-{cfg.section_hash('search')}-{dataset.path.name}"
    trainer = TorchTrainer(
        search_loop_per_worker,
        train_loop_config={"recsys": cfg.model_dump(mode="json"), "pairs": pairs, "init_from": str(pretrained_path())},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.cluster.train_workers, use_gpu=cfg.cluster.use_gpu, resources_per_worker={"CPU": cfg.cluster.cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(name=run, storage_path=str(cfg.artifacts_root / "runs")),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        meta = {"stage": STAGE, "run": run, "dataset_path": str(dataset.path), "pairs": len(pairs),
                "metrics": json.loads(Path(folder, "train_state.json").read_text()), "config": cfg.search.model_dump(mode="json")}
        return publish_folder(Path(folder) / "encoder", model_dir(cfg.artifacts_root, cfg.run_name, STAGE), run.rsplit("-", 1)[0] + "-" + dataset.path.name[-8:], meta)
