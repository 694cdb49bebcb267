"""The ads stage: the ad world over the prepared shop, then the pCTR model fine-tuned from the
retrieval model on the one training loop (the CTR task's head and loss on ad impressions: user
history, ad item, hour, weekday and the slot as the position feature, so serving can predict at any
slot), then calibration fitted on the valid day and saved in the export's recsys.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.ads.calibration import Calibrator
from recsys.ads.world import AdWorld, ad_world
from recsys.artifacts import ArtifactStore, Dataset
from recsys.config import AdsConfig, RecsysConfig
from recsys.train.seqrec_tasks import CTRTask, ctr_arrays


class AdClickTask(CTRTask):
    """BCE on logged ad impressions; the valid day's AUC picks the epoch."""

    stage = "ads"
    section = "ads.train"

    def __init__(self, *args, world: AdWorld, **kwargs):
        super().__init__(*args, **kwargs)
        self.impressions_key = world.manifest["impressions_key"]

    def run_key(self) -> dict:
        # the logged impressions it learns from; a world that differs only in budgets trains the same model
        return {**super().run_key(), "ad_impressions": self.impressions_key}

    def build_model(self):
        """The CTR head with a per-item click bias (an ad's creative), from the retrieval model; all
        of it trained (a frozen encoder measured 0.695 valid AUC against 0.765 trained)."""
        from recsys.models import SeqRecForCTR

        return SeqRecForCTR.from_retrieval_model(self.init_from, item_bias=True)


def valid_rows(world: AdWorld, split: str, max_seq_len: int) -> dict:
    """A split's impressions as the arrays ctr_validation and calibration read."""
    return ctr_arrays(world.ctr_rows(split, max_seq_len))


def predict(model, rows: dict, batch_size: int = 2048) -> dict[str, np.ndarray]:
    """Uncalibrated click probabilities and the retrieval score u·v of every impression in `rows`."""
    import torch

    probs, dots = [], []
    for lo in range(0, len(rows["label"]), batch_size):
        sl = slice(lo, lo + batch_size)
        out = model.score(rows["history"][sl], rows["candidate"][sl], rows["context"][sl])
        probs.append(torch.sigmoid(out.logits).numpy())
        dots.append(out.retrieval_scores.numpy())
    return {"prob": np.concatenate(probs).astype(np.float64), "retrieval": np.concatenate(dots).astype(np.float64)}


def calibration_report(labels, raw, calibrated, bins: int) -> dict:
    from recsys.eval.metrics import auc, expected_calibration_error, log_loss

    return {"auc": auc(labels, raw), "log_loss_before": log_loss(labels, raw), "log_loss_after": log_loss(labels, calibrated),
            "ece_before": expected_calibration_error(labels, raw, bins), "ece_after": expected_calibration_error(labels, calibrated, bins),
            "mean_predicted_before": float(np.mean(raw)), "mean_predicted_after": float(np.mean(calibrated)),
            "click_rate": float(np.mean(labels)), "impressions": int(len(labels))}


def fit_calibration(model_folder: Path, valid: dict, cfg: AdsConfig) -> dict:
    """The calibrator of the chosen epoch's model on the valid day (the export's `extra`)."""
    from recsys.models import SeqRecForCTR

    model = SeqRecForCTR.from_pretrained(model_folder).eval()
    raw = predict(model, valid)["prob"]
    calibrator = Calibrator.fit(raw, valid["label"], cfg.calibration)
    return {"calibration": calibrator.to_dict(),
            "calibration_valid": calibration_report(valid["label"], raw, calibrator(raw), cfg.calibration_bins)}


def train_ads(cfg: RecsysConfig, init_from: Path | None = None):
    """The ads stage on a running Ray: the world, the pCTR model, its calibration. Returns the StageResult."""
    import ray

    from recsys.train.trainer import fit_and_publish

    store = ArtifactStore.of(cfg)
    start = store.load("finetune", init_from) if init_from else store.latest("finetune")
    dataset: Dataset = start.dataset()
    world = ad_world(cfg, dataset)
    max_len = cfg.data.max_seq_len
    train = ray.data.from_arrow(world.ctr_rows("train", max_len)).materialize()
    valid = valid_rows(world, "valid", max_len)
    task = AdClickTask(cfg, dataset, start.path, train.count(), valid=valid if cfg.ads.train.select_best else None, world=world)
    return fit_and_publish(cfg, task, dataset, train, extra={"ad_world": str(world.path)},
                           vet=lambda folder: fit_calibration(folder, valid, cfg.ads))
