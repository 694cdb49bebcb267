"""The pCTR model's quality on held-out ad impressions: ranking (AUC, against the retrieval score
u·v the model starts from), probability quality (log-loss, expected calibration error) before and
after calibration, and a reliability diagram."""

from __future__ import annotations

from pathlib import Path

from recsys.ads.calibration import Calibrator
from recsys.ads.stage import calibration_report, predict, valid_rows
from recsys.ads.world import AdWorld
from recsys.artifacts import ModelExport
from recsys.config import AdsConfig
from recsys.eval.metrics import auc, reliability_bins


def pctr_quality(export: ModelExport, world: AdWorld, cfg: AdsConfig, max_seq_len: int, split: str = "test") -> dict:
    from recsys.models import SeqRecForCTR

    rows = valid_rows(world, split, max_seq_len)
    model = SeqRecForCTR.from_pretrained(export.path).eval()
    out = predict(model, rows)
    # the baseline: the retrieval model the pCTR model started from, its own score u·v (not the
    # pCTR model's internal dot product, whose encoder the ads stage has trained too)
    retrieval = predict(SeqRecForCTR.from_retrieval_model(export.meta.init_from).eval(), rows)["retrieval"]
    calibrated = Calibrator.from_dict(export.meta.extra["calibration"])(out["prob"])
    y = rows["label"]
    report = calibration_report(y, out["prob"], calibrated, cfg.calibration_bins)
    report |= {"split": split, "auc_retrieval_score": auc(y, retrieval), "retrieval_model": export.meta.init_from,
               "auc_pctr_internal_dot": auc(y, out["retrieval"]), "bins": cfg.calibration_bins,
               "calibration": export.meta.extra["calibration"]["method"],
               "reliability_before": reliability_bins(y, out["prob"], cfg.calibration_bins),
               "reliability_after": reliability_bins(y, calibrated, cfg.calibration_bins)}
    return report


def reliability_png(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5))
    top = max(max(b["predicted"], b["observed"]) for key in ("reliability_before", "reliability_after") for b in report[key]) * 1.08
    ax.plot([0, top], [0, top], color="0.6", lw=1, ls="--", label="perfect calibration")
    for key, label, color in (("reliability_before", f"model (ECE {report['ece_before']:.4f})", "tab:red"),
                              ("reliability_after", f"{report['calibration']} (ECE {report['ece_after']:.4f})", "tab:blue")):
        bins = report[key]
        ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o-", ms=4, color=color, label=label)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("predicted click probability (bin mean)")
    ax.set_ylabel("observed click rate")
    ax.set_title(f"Ad pCTR reliability, {report['split']} day, {report['bins']} equal-count bins\n"
                 f"{report['impressions']:,} impressions, AUC {report['auc']:.3f}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
