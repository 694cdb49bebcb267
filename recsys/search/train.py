"""Contrastive fine-tuning of the search encoder on (query, clicked or purchased item) pairs from
the logs, a task of the recommender's own training loop (recsys.train.loop: Ray Train + DeepSpeed
ZeRO 0–3, resume, gathered ZeRO-3 export, metrics over every rank).

Loss: symmetric InfoNCE with in-batch negatives (query→item and item→query), at
`search.temperature`; another pair in the batch with the same item is not a negative (masked).
Every rank gets the same number of equal-size batches per epoch (a shared shuffle, cut to a
multiple of world × batch), so the ZeRO collectives stay in step. The pairs are small (one row per
search), so they travel in the loop config rather than as a Ray Dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from recsys.config import RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.search.encoder import pretrained_version
from recsys.search.examples import STAGE, encoder_for, search_examples, search_pairs  # noqa: F401 - the stage's inputs
from recsys.train.task import TrainTask


def contrastive_loss(q: torch.Tensor, d: torch.Tensor, items: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = q @ d.T / temperature
    same = items[:, None] == items[None, :]
    logits = logits.masked_fill(same & ~torch.eye(len(items), dtype=torch.bool, device=q.device), float("-inf"))
    target = torch.arange(len(items), device=q.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class SearchEncoderTask(TrainTask):
    """The search encoder as a task of the one training loop (recsys.train.loop)."""

    stage = STAGE

    def __init__(self, cfg: RecsysConfig, dataset: PreparedDataset, pairs: list[dict], init_from: Path, source: str = "logs"):
        self.stage_cfg = cfg.search.train
        self.pairs = pairs
        self.init_from = str(init_from)
        self.max_tokens, self.temperature = cfg.search.max_tokens, cfg.search.temperature
        self.batch_size, self.world = self.stage_cfg.batch_size, cfg.cluster.train_workers
        micro = len(pairs) // (self.world * self.batch_size)
        self.steps_per_epoch = max(1, micro // self.stage_cfg.gradient_accumulation_steps)
        # What training reads, and the encoder by package version (not its site-packages path, which
        # differs between virtualenvs and images): /search's serving weights do not retrain it.
        self._key = {"dataset": str(dataset.path), "max_tokens": self.max_tokens, "temperature": self.temperature,
                     "workers": self.world, "encoder": pretrained_version(), "pairs": len(pairs)}
        if source != "logs":  # the catalog's pseudo-queries: their recipe is part of what was trained on
            from recsys.search.pseudo_queries import RECIPE

            self._key.update(source=source, adapt=cfg.search.adapt.model_dump(), recipe=RECIPE)

    def run_key(self) -> dict:
        return {**super().run_key(), **self._key}

    def build_model(self):
        from recsys.search.encoder import TextEncoder

        return TextEncoder(self.init_from)

    def batches(self, epoch: int, rank: int, world: int):
        """A shuffle shared by all ranks (seeded by epoch), cut to whole steps of world × batch pairs."""
        steps = len(self.pairs) // (world * self.batch_size)
        order = np.random.default_rng([self.stage_cfg.seed, epoch]).permutation(len(self.pairs))
        order = order[: steps * world * self.batch_size].reshape(steps, world, self.batch_size)
        for step in range(steps):
            yield [self.pairs[i] for i in order[step, rank]]

    def loss(self, engine, batch, rng):
        encoder, device = engine.module, engine.device
        tq = {k: v.to(device) for k, v in encoder.tokenize([b["query"] for b in batch], self.max_tokens).items()}
        td = {k: v.to(device) for k, v in encoder.tokenize([b["text"] for b in batch], self.max_tokens).items()}
        items = torch.tensor([b["item"] for b in batch], device=device)
        return contrastive_loss(engine(**tq), engine(**td), items, self.temperature), {}, len(batch)

    def export(self, module, folder: Path) -> None:
        module.save(folder)


def train_search_encoder(cfg: RecsysConfig, dataset: PreparedDataset, fault: dict | None = None):
    """Fine-tune from the bundled MiniLM with the one training loop; publish the encoder under
    models/<run>/search/<version> (a StageResult). None when the logs hold no searches (the stage
    then adapts to the catalog's pseudo-queries with `search.adapt.enabled`, recsys.search.adapt;
    otherwise the index embeds with the pretrained encoder)."""
    from recsys.search.encoder import pretrained_path
    from recsys.train.trainer import fit_and_publish

    pairs = search_pairs(dataset, "train")
    if not pairs:
        return None
    need = cfg.cluster.train_workers * cfg.search.train.batch_size
    if len(pairs) < need:
        raise ValueError(
            f"{dataset.path} has {len(pairs)} training search pairs (examples/search), fewer than one step needs "
            f"({cfg.cluster.train_workers} workers × search.train.batch_size {cfg.search.train.batch_size}); lower the batch size"
        )
    task = SearchEncoderTask(cfg, dataset, pairs, pretrained_path())
    return fit_and_publish(cfg, task, dataset, fault=fault, extra={"pairs": len(pairs)})
