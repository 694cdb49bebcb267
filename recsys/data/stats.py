"""`recsys data stats <dataset>`: the key figures of a prepared dataset, printed and plotted (PNG).

Plots: sequence lengths, the item popularity curve (rank vs interactions, log-log) and events per
day by type. Reads only the columns it needs, file by file, with a progress bar, so it stays
usable on tens of millions of events.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from recsys.artifacts import LATEST, latest_version
from recsys.data.dataset import PreparedDataset


def resolve_dataset(path: str) -> PreparedDataset:
    """A version folder, or a dataset folder holding versions (its LATEST is used)."""
    p = Path(path)
    if (p / LATEST).is_file() and not (p / "manifest.json").is_file():
        return PreparedDataset(latest_version(p, "dataset"))
    return PreparedDataset(p)


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.parquet")) if folder.is_dir() else []


def compute_stats(ds: PreparedDataset, progress: bool = True) -> dict:
    lengths: list[np.ndarray] = []
    sessions: list[np.ndarray] = []
    for f in tqdm(_files(ds.path / "sequences"), desc="sequences", unit="file", disable=not progress):
        t = pq.read_table(f, columns=["items", "sessions"])
        lengths.append(pc.list_value_length(t["items"]).to_numpy(zero_copy_only=False))
        s = t["sessions"].combine_chunks()
        ends = s.offsets.to_numpy()[1:]
        # Sessions are numbered from 0 per user: the last item's session + 1 is the user's session count.
        sessions.append(s.values.to_numpy()[ends - 1] + 1 if len(ends) else np.zeros(0, int))
    lengths_all = np.concatenate(lengths) if lengths else np.zeros(0, int)
    sessions_all = np.concatenate(sessions) if sessions else np.zeros(0, int)

    per_day: dict[str, Counter] = {}
    for f in tqdm(_files(ds.path / "events"), desc="events", unit="file", disable=not progress):
        t = pq.read_table(f, columns=["timestamp", "event_type"])
        day = pc.strftime(t["timestamp"], format="%Y-%m-%d")
        counts = pc.value_counts(pc.binary_join_element_wise(day, t["event_type"], "|")).to_pylist()
        for row in counts:
            d, kind = row["values"].split("|", 1)
            per_day.setdefault(kind, Counter())[d] += row["counts"]

    items = pq.read_table(ds.path / "items.parquet", columns=["item_index", "train_count"])
    popularity = np.sort(items["train_count"].to_numpy())[::-1]
    total = max(int(popularity.sum()), 1)
    top = max(1, len(popularity) // 100)
    m = ds.manifest
    return {
        "dataset": f"{m['name']}/{m['version']}",
        "counts": m["counts"],
        "quarantine": {k: v for k, v in m.get("quarantine", {}).get("reasons", {}).items() if v},
        "vocab": m["vocab"],
        "split": m["split"],
        "sequence_length": _summary(lengths_all),
        "sessions_per_user": _summary(sessions_all),
        "popularity": {
            "items_never_trained_on": int((popularity == 0).sum()),
            "top_1pct_share": round(float(popularity[:top].sum()) / total, 4),
            "gini": round(_gini(popularity), 4),
        },
        "days": len({d for c in per_day.values() for d in c}),
        "_plots": {"lengths": lengths_all, "popularity": popularity, "per_day": per_day},
    }


def _summary(x: np.ndarray) -> dict:
    if len(x) == 0:
        return {}
    q = np.percentile(x, [50, 90, 99])
    return {"mean": round(float(x.mean()), 2), **{f"p{p}": round(float(v), 1) for p, v in zip((50, 90, 99), q, strict=True)},
            "max": int(x.max())}


def _gini(counts: np.ndarray) -> float:
    x = np.sort(counts.astype(float))
    if x.sum() == 0:
        return 0.0
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1).dot(x) / (n * x.sum()))


def write_plots(stats: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    data, name = stats["_plots"], stats["dataset"]
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4))
    lengths = data["lengths"]
    ax.hist(lengths, bins=min(60, max(int(lengths.max()) if len(lengths) else 1, 1)), color="#4c72b0")
    ax.set_yscale("log")
    ax.set(title=f"Sequence length per user — {name}", xlabel="interactions in the user's sequence", ylabel="users (log)")
    paths.append(_save(fig, out / "sequence_lengths.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    pop = data["popularity"]
    ranks = np.arange(1, len(pop) + 1)
    ax.loglog(ranks[pop > 0], pop[pop > 0], color="#dd8452")
    ax.set(title=f"Item popularity (training interactions) — {name}", xlabel="item rank", ylabel="interactions")
    ax.grid(True, which="both", alpha=0.3)
    paths.append(_save(fig, out / "popularity.png"))

    fig, ax = plt.subplots(figsize=(9, 4))
    days = sorted({d for c in data["per_day"].values() for d in c})
    kinds = sorted(data["per_day"].items(), key=lambda kv: -sum(kv[1].values()))
    if len(days) <= 2:
        # A source without real time (Beauty keeps order only): a line over one day would be invisible.
        totals = [sum(c.values()) for _, c in kinds]
        ax.bar([k for k, _ in kinds], totals, color="#55a868")
        ax.set_yscale("log")
        ax.set(title=f"Events by type — all on {', '.join(days)}: the source has order, not real time\n{name}",
               ylabel="events (log)")
        for i, v in enumerate(totals):
            ax.annotate(f"{v:,}", (i, v), ha="center", va="bottom", fontsize=9)
    else:
        x = np.array(days, dtype="datetime64[D]")
        for kind, counter in kinds:
            ax.plot(x, [counter.get(d, 0) for d in days], label=kind, linewidth=1, marker="." if len(days) < 40 else None)
        ax.set_yscale("log")
        ax.set(title=f"Events per day by type — {name}", xlabel="day (UTC)", ylabel="events (log)")
        ax.legend(fontsize=8, ncol=3)
        fig.autofmt_xdate()
    paths.append(_save(fig, out / "events_per_day.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def format_stats(stats: dict) -> str:
    c = stats["counts"]
    lines = [
        f"dataset        {stats['dataset']}",
        f"events         {c['events_read']:,} read, {c['events_valid']:,} valid, {c['quarantined']:,} quarantined",
        f"quarantine     {json.dumps(stats['quarantine']) if stats['quarantine'] else 'none'}",
        f"users          {c['users']:,} ({c['users_not_in_test']:,} not in the test split)",
        f"items          {stats['vocab']['num_items']:,} in the vocabulary ({stats['vocab'].get('source', 'catalog')}), "
        f"{stats['popularity']['items_never_trained_on']:,} never in training",
        f"attributes     {stats['vocab']['num_attributes']:,}",
        f"split          {stats['split']['protocol']}: train {c['train_rows']:,} / valid {c['valid_rows']:,} / test {c['test_rows']:,} users",
        f"seq length     {stats['sequence_length']}",
        f"sessions/user  {stats['sessions_per_user']}",
        f"popularity     top 1% of items hold {stats['popularity']['top_1pct_share']:.1%} of interactions, gini {stats['popularity']['gini']}",
        f"days           {stats['days']}",
    ]
    for kind in ("ctr_examples", "search_examples"):
        if kind in c:
            lines.append(f"{kind:<16}{json.dumps(c[kind])}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `recsys data stats` (the CLI adds the subcommand; `run` executes it)."""
    parser.add_argument("dataset", help="a prepared dataset folder: artifacts/datasets/<name> (uses LATEST) or a version in it")
    parser.add_argument("--out", help="folder for the PNG plots (default: <version>/stats)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """`recsys data stats`: print the figures, write the plots; 1 when the folder is no dataset."""
    try:
        ds = resolve_dataset(args.dataset)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stats = compute_stats(ds, progress=not args.no_progress)
    print(format_stats(stats))
    for p in write_plots(stats, Path(args.out) if args.out else ds.path / "stats"):
        print(f"plot: {p}")
    return 0
