"""The recommender's training stages as tasks of the one loop: masked-item pretraining, next-item
fine-tuning and CTR ranking. Each is built on the driver from the typed config and a prepared
dataset (`seqrec_task`); its methods run on the Ray Train workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recsys.artifacts import Dataset, ModelExport
from recsys.config import RecsysConfig
from recsys.data.text_vectors import TEXT_ENCODER, item_text_vectors
from recsys.train.schedule import optimizer_steps
from recsys.train.task import TrainTask

BUCKET_WINDOW = 8  # batches per length-bucketing window
SEQREC_STAGES = ("pretrain", "finetune", "ctr")


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


class SeqRecTask(TrainTask):
    """Shared by the three recommender stages: the model (from scratch or an earlier export) and
    the input shard Ray Train streams to each worker."""

    uses_train_dataset = True
    window = BUCKET_WINDOW
    section: str | None = None  # the dotted config section of the stage's settings, when not `stage`

    def __init__(self, cfg: RecsysConfig, dataset: Dataset, init_from: Path | None, train_rows: int,
                 valid: dict | None = None):
        self.stage_cfg = cfg
        for part in (self.section or self.stage).split("."):  # e.g. "ads.train"
            self.stage_cfg = getattr(self.stage_cfg, part)
        self.eval_cfg = cfg.eval
        self.item_text, text_key = None, None
        if cfg.model.text_features:  # the frozen text vectors, shared with the index and serving
            vectors = item_text_vectors(cfg.artifacts_root, dataset, cfg.model.text_max_tokens)
            self.item_text, text_key = vectors.table(), vectors.path.name
        self.model_config = model_config_kwargs(cfg, dataset, 0 if self.item_text is None else self.item_text.shape[1])
        self.item_attributes = dataset.attribute_matrix(cfg.data.max_attributes_per_item)
        self.init_from = str(init_from) if init_from else None
        # the shop's name prefixes its item ids in a pooled model's vocabulary (recsys/train/transfer.py)
        self.dataset_path, self.shop = str(dataset.path), dataset.manifest["name"] if init_from else None
        if init_from:
            _check_same_text_features(cfg, init_from)
        self.steps_per_epoch = optimizer_steps(train_rows, cfg.cluster.train_workers, self.stage_cfg, self.window)
        self.valid = valid
        self._key = {"dataset": str(dataset.path), "model": cfg.model.model_dump(mode="json"),
                     "workers": cfg.cluster.train_workers, "init_from": self.init_from, "text_vectors": text_key}

    def run_key(self) -> dict:
        return {**super().run_key(), **self._key}

    def build_model(self):
        from recsys.models import SeqRecConfig, SeqRecModel

        if self.init_from:
            source = ModelExport.load(self.init_from)
            if Path(source.meta.dataset_path).resolve() == Path(self.dataset_path).resolve():
                return SeqRecModel.from_pretrained(self.init_from)
        model = SeqRecModel(SeqRecConfig(**self.model_config))
        self._fill_tables(model)
        if self.init_from:  # pretrained on other data (pooled shops): copy what the vocabularies share
            from recsys.train.transfer import transfer_weights

            transfer_weights(SeqRecModel.from_pretrained(self.init_from), source.dataset(), model,
                             Dataset(self.dataset_path), f"{self.shop}/")
        return model

    def _fill_tables(self, model) -> None:
        """The frozen per-item tables of a model built from scratch: attributes, text vectors."""
        model.set_item_attributes(torch.tensor(self.item_attributes))
        if self.item_text is not None:
            model.set_item_text_embeddings(torch.from_numpy(self.item_text))

    def batches(self, epoch: int, rank: int, world: int):
        """Length-bucketed batches. The bucket order comes from an rng shared by all ranks, so at each
        step every rank takes the bucket at the same length quantile of its own window: ranks of a
        data-parallel step then do about the same work and none idles at the gradient all-reduce
        (with per-rank orders, a rank with short sequences waited for one with long ones: measured
        0.5–0.7 busy cores of 1 per worker on Beauty)."""
        import ray.train

        from recsys.train.batches import length_bucketed

        cfg = self.stage_cfg
        windows = ray.train.get_dataset_shard("train").iter_batches(
            batch_size=cfg.batch_size * BUCKET_WINDOW,
            batch_format="numpy",
            local_shuffle_buffer_size=cfg.batch_size * BUCKET_WINDOW * 2,
            local_shuffle_seed=cfg.seed + epoch,
        )
        return length_bucketed(windows, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]))

    @staticmethod
    def _parts(out) -> dict[str, float]:
        return {name: float(getattr(out, name).detach()) for name in ("item_loss", "attribute_loss", "content_loss")
                if getattr(out, name) is not None}


class PretrainTask(SeqRecTask):
    """Masked items (bidirectional cloze), plus masked-attribute prediction when weighted."""

    stage = "pretrain"

    def loss(self, engine, batch, rng):
        from recsys.train.batches import masked_item_batch

        config = engine.module.config
        inputs, labels = masked_item_batch(batch, config.max_seq_len, self.stage_cfg.mask_prob, config.mask_index, rng)
        out = engine(inputs.to(engine.device), labels=labels.to(engine.device), causal=False,
                     attribute_loss_weight=self.stage_cfg.attribute_loss_weight,
                     content_loss_weight=self.stage_cfg.content_loss_weight)
        return out.loss, self._parts(out), len(inputs)


class NextItemTask(SeqRecTask):
    """Next-item retrieval: full softmax over the catalog, or sampled softmax with log-Q correction."""

    stage = "finetune"

    def __init__(self, *args, item_counts: list | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.item_counts = item_counts
        self.select_metric = "ndcg@10" if self.valid is not None else None
        self._sampler = None

    def loss(self, engine, batch, rng):
        from recsys.train.batches import next_item_batch

        cfg, device = self.stage_cfg, engine.device
        if cfg.loss == "sampled_softmax" and self._sampler is None:
            self._sampler = NegativeSampler(self.item_counts, cfg.num_negatives, cfg.negative_sampling_power)
        sampler = self._sampler
        inputs, labels = next_item_batch(batch, engine.module.config.max_seq_len)
        out = engine(inputs.to(device), labels=labels.to(device), causal=True,
                     negatives=sampler.draw(rng).to(device) if sampler else None,
                     log_q=sampler.log_q.to(device) if sampler else None,
                     content_loss_weight=cfg.content_loss_weight)
        return out.loss, self._parts(out), len(inputs)

    def validate(self, module, rank, world):
        from recsys.train.validation import next_item_validation

        return next_item_validation(module, self.valid, self.eval_cfg, rank, world)


class CTRTask(SeqRecTask):
    """A click head over the fine-tuned encoder, binary cross-entropy on impressions."""

    stage = "ctr"
    window = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.select_metric = "auc" if self.valid is not None else None

    def build_model(self):
        from recsys.models import SeqRecConfig, SeqRecForCTR

        if self.init_from:
            return SeqRecForCTR.from_retrieval_model(self.init_from)
        model = SeqRecForCTR(SeqRecConfig(**self.model_config))
        self._fill_tables(model.seqrec)
        return model

    def batches(self, epoch, rank, world):
        import ray.train

        cfg = self.stage_cfg
        return ray.train.get_dataset_shard("train").iter_batches(
            batch_size=cfg.batch_size, batch_format="numpy",
            local_shuffle_buffer_size=cfg.batch_size * 4, local_shuffle_seed=cfg.seed + epoch,
        )

    def loss(self, engine, batch, rng):
        from recsys.models.seqrec import left_pad

        device = engine.device
        inputs = left_pad(list(batch["history"]), engine.module.config.max_seq_len).to(device)
        context = np.stack([batch["hour"], batch["weekday"], batch["session_position"]], axis=1).astype(np.int64)
        out = engine(inputs, torch.from_numpy(batch["candidate"].astype(np.int64)).to(device),
                     torch.from_numpy(context).to(device), labels=torch.from_numpy(batch["label"]).to(device))
        return out.loss, {}, len(inputs)

    def validate(self, module, rank, world):
        from recsys.train.validation import ctr_validation

        return ctr_validation(module, self.valid, self.eval_cfg, rank, world)


# ---- driver side: the task and its Ray Dataset from the config and a prepared dataset ----------
def model_config_kwargs(cfg: RecsysConfig, dataset: Dataset, text_dim: int = 0) -> dict:
    """The HF model config: architecture from `model`, sizes from the dataset's vocabularies (and
    the text vectors' width when model.text_features is on)."""
    m = cfg.model
    return {
        "text_embedding_dim": text_dim,
        "text_encoder": TEXT_ENCODER if text_dim else None,
        "text_max_tokens": m.text_max_tokens,
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
        "id_dropout": m.id_dropout,
        "item_ids": m.item_ids,
    }


def _check_same_text_features(cfg: RecsysConfig, init_from: Path) -> None:
    """A stage starting from an export keeps that export's item representation: say so when the
    config asks for another one instead of silently training without (or with) text."""
    from recsys.models import SeqRecConfig

    has_text = SeqRecConfig.from_pretrained(init_from).text_embedding_dim > 0
    if has_text != cfg.model.text_features:
        raise ValueError(f"model.text_features is {cfg.model.text_features} but the model it starts from ({init_from}) was "
                         f"trained {'with' if has_text else 'without'} text vectors; retrain that stage with the same setting")


def training_dataset(cfg: RecsysConfig, stage: str, dataset: Dataset):
    """The `train` split as the stage consumes it; Ray Train streams disjoint shards of it to workers."""
    import ray

    if stage == "ctr":
        return ray.data.from_arrow(dataset.ctr_rows("train")).materialize()
    train = ray.data.read_parquet(dataset.split_dir("train"))
    if stage == "finetune":
        train = train.map_batches(_with_next_item_pairs, batch_format="pyarrow")
    if cfg.data.cache_train_split:
        train = train.materialize()
    return train


def seqrec_task(cfg: RecsysConfig, stage: str, dataset: Dataset, init_from: Path | None, train_rows: int) -> SeqRecTask:
    if stage not in SEQREC_STAGES:
        raise ValueError(f"unknown recommender stage {stage!r}; use one of {SEQREC_STAGES}")
    if stage == "pretrain":
        return PretrainTask(cfg, dataset, init_from, train_rows)
    if stage == "ctr":
        return CTRTask(cfg, dataset, init_from, train_rows, valid=_ctr_valid(dataset) if cfg.ctr.select_best else None)
    counts = _item_counts(dataset) if cfg.finetune.loss == "sampled_softmax" else None
    return NextItemTask(cfg, dataset, init_from, train_rows, valid=_next_item_valid(dataset) if cfg.finetune.select_best else None,
                        item_counts=counts)


def _next_item_valid(dataset: Dataset) -> dict:
    """The valid split as plain arrays for the in-loop validation (see recsys/train/validation.py)."""
    valid = dataset.read_split("valid")
    return {"history": [list(h) for h in valid["history"]], "target": np.asarray(valid["target"], dtype=np.int64)}


def _ctr_valid(dataset: Dataset) -> dict:
    return ctr_arrays(dataset.ctr_rows("valid"))


def ctr_arrays(table: pa.Table) -> dict:
    """CTR rows (history, candidate, hour, weekday, session_position, label, user) as the arrays
    ctr_validation reads: the shop's impressions, or the ad world's (recsys/ads/stage.py)."""
    rows = table.to_pydict()
    return {
        "history": rows["history"],
        "candidate": np.asarray(rows["candidate"]),
        "context": np.stack([rows["hour"], rows["weekday"], rows["session_position"]], axis=1),
        "label": np.asarray(rows["label"], dtype=np.int8),
        "user": np.asarray(rows["user"]),
    }


def _item_counts(dataset: Dataset) -> list[float]:
    """Train interaction count per item index 0..N+1 (pad and [MASK] 0), for negative sampling."""
    items = dataset.items()
    counts = np.zeros(dataset.num_items + 2)
    counts[np.asarray(items["item_index"])] = np.asarray(items["train_count"], dtype=np.float64)
    return counts.tolist()


def _with_next_item_pairs(batch: pa.Table) -> pa.Table:
    """A history of one item has no next-item pair."""
    return batch.filter(pc.greater_equal(pc.list_value_length(batch["items"]), 2))
