"""`recsys forecast report`: the printed backtest table, a fan chart of chosen products (history and
the published P10–P90 band around P50) and a plot of the backtest (WAPE per forecaster and segment;
the default forecaster's weekly total against the actual one at every origin)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recsys.artifacts import ForecastRelease

SEGMENT_ORDER = ("all", "top_sellers", "long_tail", "new")


def format_backtest(manifest: dict) -> str:
    """Markdown: every forecaster's metrics by segment, the replenishment replay, the protocol."""
    bt = manifest.get("backtest")
    lines = [f"forecast {manifest['version']}: {manifest['products']} products, {manifest['max_horizon']} weeks from "
             f"{manifest['origin']}, model {manifest['model']}"]
    if not bt:
        return "\n".join(lines + ["(no backtest: forecast.backtest.enabled is false)"])
    lines += ["", f"backtest origins {', '.join(bt['origins'])}, horizon {manifest['horizon']} weeks", "",
              "| model | WAPE | MASE | pinball | P10–P90 coverage | WAPE top sellers | WAPE long tail | WAPE new | fit s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in bt["models"].items():
        m = entry["metrics"]
        lines.append(f"| {name} | {m['all']['wape']:.3f} | {m['all']['mase']:.3f} | {m['all']['pinball']:.3f} | "
                     f"{m['all']['coverage_p10_p90']:.3f} | {m['top_sellers']['wape']:.3f} | {m['long_tail']['wape']:.3f} | "
                     f"{m['new']['wape']:.3f} | {entry['fit_seconds']:.1f} |")
    rep = bt["replenishment"]
    lines += ["", f"replenishment replay ({rep['model']}, service level {rep['service_level']}, lead time "
              f"{rep['lead_time_weeks']} week(s)):", "", "| policy | fill rate | stock-out weeks | average on hand | lost units |",
              "|---|---|---|---|---|"]
    for policy in ("forecast", "naive"):
        p = rep[policy]
        lines.append(f"| {policy} | {p['fill_rate']:.3f} | {p['stockout_weeks']} / {p['product_weeks']} | "
                     f"{p['average_on_hand']:.1f} | {p['lost_units']:.0f} |")
    if rep.get("frontier"):
        lines += ["", "the trade-off of each policy family (fill rate at its average stock):", "",
                  "| policy | fill rate | average on hand |", "|---|---|---|"]
        lines += [f"| {name} | {p['fill_rate']:.3f} | {p['average_on_hand']:.1f} |" for name, p in rep["frontier"].items()]
    lines += ["", f"protocol: {bt['protocol']}"]
    return "\n".join(lines)


def write_report(release: ForecastRelease, items: list[str] | None = None, out: Path | None = None,
                 history_weeks: int = 26) -> dict[str, Path]:
    """fan_chart.png and backtest.png (and backtest.md) in `out` (default: the release folder's report/)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out or release.path / "report")
    out.mkdir(parents=True, exist_ok=True)
    history = pd.read_parquet(release.path / "history.parquet")
    forecast = pd.read_parquet(release.path / "forecasts.parquet")
    if items is None:
        recent = history[history["ds"] > history["ds"].max() - pd.Timedelta(weeks=13)]
        items = list(recent.groupby("unique_id")["y"].sum().nlargest(4).index)
    unknown = [i for i in items if i not in set(forecast["unique_id"])]
    if unknown:
        raise ValueError(f"--items: no forecast for {unknown} in {release.path}")

    cols = 2
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), squeeze=False)
    for ax, item in zip(axes.ravel(), items, strict=False):
        h = history[history["unique_id"] == item].tail(history_weeks)
        f = forecast[forecast["unique_id"] == item]
        ax.plot(h["ds"], h["y"], color="black", lw=1.2, label="weekly units sold")
        ax.fill_between(f["ds"], f["p10"], f["p90"], color="tab:blue", alpha=0.25, label="P10–P90")
        ax.plot(f["ds"], f["p50"], color="tab:blue", lw=1.5, label="P50")
        ax.set_title(f"product {item}", fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    for ax in axes.ravel()[len(items):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"forecast {release.version} ({release.manifest['model']}), from {release.manifest['origin']}")
    fig.tight_layout()
    paths = {"fan_chart": out / "fan_chart.png"}
    fig.savefig(paths["fan_chart"], dpi=110)
    plt.close(fig)

    bt = release.manifest.get("backtest")
    if bt:
        paths["backtest"] = out / "backtest.png"
        _backtest_plot(release, bt, paths["backtest"], plt)
        paths["table"] = out / "backtest.md"
        paths["table"].write_text(format_backtest(release.manifest) + "\n")
    return paths


def _backtest_plot(release: ForecastRelease, bt: dict, path: Path, plt) -> None:
    models = list(bt["models"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2))
    width = 0.8 / len(SEGMENT_ORDER)
    for k, segment in enumerate(SEGMENT_ORDER):
        values = [bt["models"][m]["metrics"][segment]["wape"] for m in models]
        left.bar([i + k * width for i in range(len(models))], values, width, label=segment)
    left.set_xticks([i + 0.4 - width / 2 for i in range(len(models))], models, rotation=25, fontsize=8)
    left.set_ylabel("WAPE (lower is better)")
    left.set_title("backtest WAPE by segment, origins pooled")
    top = max(bt["models"][m]["metrics"][seg]["wape"] for m in models for seg in SEGMENT_ORDER)
    left.set_ylim(0, top * 1.25)  # room for the legend above the bars
    left.legend(fontsize=8, ncol=len(SEGMENT_ORDER), loc="upper center")

    rows = pd.read_parquet(release.path / "backtest_rows.parquet")
    mine = rows[rows["model"] == release.manifest["model"]]
    total = mine.groupby(["origin", "ds"])[["y", "p10", "p50", "p90"]].sum().reset_index()
    for _, part in total.groupby("origin"):
        right.fill_between(part["ds"], part["p10"], part["p90"], color="tab:blue", alpha=0.15)
        right.plot(part["ds"], part["p50"], color="tab:blue", lw=1.2, marker=".")
        right.plot(part["ds"], part["y"], color="black", lw=1.2, marker=".")
    right.plot([], [], color="black", label="actual units, all products")
    right.plot([], [], color="tab:blue", label=f"sum of P50 ({release.manifest['model']}), per origin")
    right.set_title("weekly totals at each backtest origin (sums of quantiles, not quantiles of the sum)", fontsize=9)
    right.tick_params(axis="x", labelrotation=30, labelsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
