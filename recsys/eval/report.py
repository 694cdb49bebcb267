"""An evaluation report, written out: the metrics table beside the published anchors (table.md) and
the learning curves (curves.png), next to the report.json the evaluation wrote. `recsys eval report`
(recsys/cli.py) evaluates and calls write_report."""

from __future__ import annotations

from pathlib import Path

KS = (5, 10, 20)


def metrics_table(report: dict) -> str:
    """Markdown: our model, the same-harness popularity baseline, then the published anchors."""
    ks = [k for k in KS if f"hr@{k}" in report["metrics"]["model"]]
    cols = [f"{m}@{k}" for m in ("hr", "ndcg") for k in ks] + [f"mrr@{k}" for k in ks]
    rows = [("ours", report["metrics"]["model"]), ("popularity (same harness)", report["metrics"]["popularity"])]
    if "served" in report["metrics"]:  # the same model through the served engine (ANN + ranker), top-k answers
        rows.insert(1, ("ours, as served", report["metrics"]["served"]))
    rows += [(f"{name} (published)", vals) for name, vals in report.get("published_anchors", {}).items()]
    lines = [
        f"Dataset {report['dataset']}, {report['users']} users, {report['num_items']} items; "
        f"{report['protocol']['protocol']}, {report['protocol']['ranking']}; {report['protocol']['note']}.",
        "",
        "| model | " + " | ".join(c.upper() for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name, vals in rows:
        cells = [f"{vals[c]:.4f}" if c in vals else "—" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "ctr" in report:
        ctr = report["ctr"]
        lines += [
            "",
            f"CTR ranking on {ctr['impressions']} impressions (click rate {ctr['click_rate']:.3f}):",
            "",
            "| scorer | AUC | GAUC | log-loss |",
            "|---|---|---|---|",
            f"| CTR model (BCE) | {ctr['model']['auc']:.4f} | {ctr['model']['gauc']:.4f} | {ctr['model']['log_loss']:.4f} |",
            f"| retrieval score u·v | {ctr['retrieval_score']['auc']:.4f} | {ctr['retrieval_score']['gauc']:.4f} | — |",
            f"| popularity | {ctr['popularity']['auc']:.4f} | {ctr['popularity']['gauc']:.4f} | — |",
            f"| constant click rate | 0.5 | 0.5 | {ctr['constant_click_rate_log_loss']:.4f} |",
        ]
    return "\n".join(lines) + "\n"


def plot_curves(report: dict, path: Path) -> None:
    """Training loss per epoch (pretrain, finetune) and validation NDCG@10 / HR@10 per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    training = report.get("training", {})
    fine = (training.get("finetune") or {}).get("history") or []
    pre = (training.get("pretrain") or {}).get("history") or []
    fig, (ax_loss, ax_valid) = plt.subplots(1, 2, figsize=(11, 4))
    for name, hist in (("pretrain", pre), ("finetune", fine)):
        if hist:
            ax_loss.plot([h["epoch"] for h in hist], [h["loss"] for h in hist], marker="o", label=f"{name} loss")
        if name == "pretrain" and hist and "attribute_loss" in hist[0]:
            ax_loss.plot([h["epoch"] for h in hist], [h["attribute_loss"] for h in hist], ls="--",
                         label="pretrain masked-attribute loss")
    ax_loss.set(xlabel="epoch", ylabel="mean training loss", title="training loss")
    ax_loss.legend()
    for key in ("valid_ndcg@10", "valid_hr@10"):
        points = [(h["epoch"], h[key]) for h in fine if key in h]
        if points:
            ax_valid.plot(*zip(*points, strict=True), marker="o", label=key.replace("valid_", "valid "))
    exported = (training.get("finetune") or {}).get("exported_epoch")
    if exported is not None:
        ax_valid.axvline(exported, color="grey", ls=":", label=f"exported epoch {exported}")
    ax_valid.set(xlabel="fine-tuning epoch", ylabel="metric (valid split, full ranking)", title="validation")
    ax_valid.legend()
    fig.suptitle(report["dataset"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict) -> dict[str, Path]:
    folder = Path(report["path"]).parent
    paths = {"json": folder / "report.json", "table": folder / "table.md", "curves": folder / "curves.png"}
    paths["table"].write_text(metrics_table(report))
    plot_curves(report, paths["curves"])
    return paths

