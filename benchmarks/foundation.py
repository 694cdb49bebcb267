"""What each part of the foundation model buys: id-only, + attributes, + text, + pretraining,
+ pooled pretraining, on Online Retail (titles, time split), MovieLens-100k (titles and genres,
time split) and Amazon Beauty (attributes, no titles, leave-one-out). One run per row, each the
dataset's config (configs/*.yaml) with the row's overrides, evaluated by the same harness
(recsys/eval/segments.py: full ranking over known and cold items, history excluded) on all
targets, cold targets, long-tail targets and short-history users, beside popularity and the
newest-popular baseline.

    python -m benchmarks.foundation [--datasets online_retail movielens beauty] [--rows id_only text ...]

Writes benchmarks/results/foundation.json after every row (rows of earlier runs that this one does
not redo are kept), with flat keys `<dataset>.<row>.<segment>.<metric>` such as
`online_retail.text.cold.hr@10`, and the issue's targets checked at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from recsys import stages
from recsys.config import load_config
from recsys.runtime import init_ray, quiet_ray_data

OUT = Path(__file__).resolve().parent / "results" / "foundation.json"
METRICS = ("hr@10", "ndcg@10")
SEGMENTS = ("all", "known", "cold", "long_tail", "short_history", "cold_among_new")
DATASETS = {  # name → config, what its catalog carries, and the file that must exist
    "online_retail": {"config": "configs/online-retail.yaml", "attributes": False, "text": True,
                      "file": lambda c: Path(c.data.online_retail_dir, "online_retail.parquet")},
    "movielens": {"config": "configs/movielens.yaml", "attributes": True, "text": True,
                  "file": lambda c: Path(c.data.movielens_dir, "ml-100k.inter")},
    "beauty": {"config": "configs/beauty.yaml", "attributes": True, "text": False,
               "file": lambda c: Path(c.data.beauty_dir, "Beauty.txt")},
}
ROWS = ("id_only", "attributes", "id_text", "text_only", "pretraining", "pretraining_aligned", "pooled")


def row_overrides(row: str, spec: dict) -> list[str] | str:
    """The row's config overrides, or why the row does not apply to this dataset.

    id_only: id embeddings alone (SASRec's item representation); attributes: + attribute embeddings;
    id_text: + the projected text vector; text_only: attributes + text with no id embedding (a new
    product is scored exactly like a trained one). pretraining: the recipe's representation (the
    dataset config's; text where the catalog has it) after masked-item pretraining on this shop's
    logs; pretraining_aligned: + the text-alignment objective (pretrain.content_loss_weight: the
    masked state against every item's content vector); pooled: the recipe's representation after
    masked-item pretraining on the pooled logs of the POOL shops."""
    attrs, text = str(spec["attributes"]).lower(), spec["text"]
    off = ["pretrain.enabled=false", "model.id_dropout=0"]
    if row == "id_only":
        return ["model.attribute_embeddings=false", "model.text_features=false", "model.item_ids=true", *off]
    if row == "attributes":
        if not spec["attributes"]:
            return "the catalog has no attributes (the id-only row is this row)"
        return ["model.attribute_embeddings=true", "model.text_features=false", "model.item_ids=true", *off]
    if not text and row in ("id_text", "text_only", "pooled"):
        return "the catalog has no titles" + (": no item representation is shared with other shops" if row == "pooled" else "")
    if row in ("id_text", "text_only"):
        return [f"model.attribute_embeddings={attrs}", "model.text_features=true",
                f"model.item_ids={'true' if row == 'id_text' else 'false'}", *off]
    if row == "pretraining_aligned":
        if not text:
            return "the catalog has no titles: there is no text to align with"
        if not load_config(spec["config"]).model.item_ids:
            return "content-only items (model.item_ids: false): the masked-item loss already is the text alignment"
        return [*row_overrides("pretraining", spec), "pretrain.content_loss_weight=1.0"]
    if row in ("pretraining", "pooled"):  # the recipe's item representation, as the dataset config sets it
        out = [f"model.attribute_embeddings={attrs}", f"model.text_features={str(text).lower()}", "model.id_dropout=0",
               "pretrain.enabled=true"]
        if row == "pooled":  # this shop's training period pooled with the other POOL shops' (recsys.stages.pretraining_run)
            others = [DATASETS[n]["config"] for n in POOL if DATASETS[n]["config"] != spec["config"]]
            out.append(f"pretrain.pool_with=[{', '.join(others)}]")
        return out
    raise ValueError(f"unknown row {row!r}; use one of {ROWS}")


def text_row(name: str) -> str:
    """The text row of the recipe: the representation the dataset config chose on its valid split."""
    return "id_text" if load_config(DATASETS[name]["config"]).model.item_ids else "text_only"


def _row_model(name: str, row: str, result: dict):
    """(config, exported model, dataset) of a row already run."""
    from recsys.artifacts import ModelExport
    from recsys.models import SeqRecModel

    cfg = load_config(DATASETS[name]["config"], [f"run_name=foundation-{name}-{row}", *result["overrides"]])
    model_path = json.loads(Path(result["report"]).read_text())["model"]
    return cfg, SeqRecModel.from_pretrained(model_path).eval(), ModelExport.load(model_path).dataset()


def _row_metric(name: str, row: str, result: dict, segment: str, metric: str = "ndcg@10"):
    """Per-row `metric` of a row's exported model on one segment (the paired comparisons' input)."""
    from recsys.eval.segments import cold_text_for, model_scorer, per_row, row_counts, segment_rows

    cfg, model, dataset = _row_model(name, row, result)
    rows = segment_rows(dataset, cfg.eval.split, cfg.eval)
    scorer = model_scorer(model, dataset, cold_text_for(cfg, model, dataset), model.config.max_attributes_per_item)
    counts, _ = row_counts(scorer, rows, cfg.eval)
    return per_row(counts[rows.masks[segment]], metric)


def paired_ci(results: dict, name: str, row: str, base: str, segment: str, n: int = 2000) -> dict | None:
    """95% paired-bootstrap interval of mean NDCG@10 (row) ÷ mean NDCG@10 (base) over the same rows."""
    import numpy as np

    a, b = results.get(name, {}).get(row, {}), results.get(name, {}).get(base, {})
    if "report" not in a or "report" not in b:
        return None
    x, y = _row_metric(name, row, a, segment), _row_metric(name, base, b, segment)
    if not len(x) or not y.sum():
        return None
    idx = np.random.default_rng(0).integers(0, len(x), (n, len(x)))
    num, den = x[idx].mean(1), y[idx].mean(1)
    ratios = num[den > 0] / den[den > 0]
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return {"ratio": round(float(x.mean() / y.mean()), 3), "ci95": [round(float(lo), 3), round(float(hi), 3)],
            "rows": int(len(x)), "resamples": int(len(ratios))}


def significance(results: dict) -> dict:
    """The targets' comparisons with their paired-bootstrap intervals (rows are the same in both runs)."""
    out = {}
    for name, spec in DATASETS.items():
        base = text_row(name) if spec["text"] else "attributes"
        if spec["text"]:
            out[f"{name}.text_vs_id_only.all"] = paired_ci(results, name, base, "id_only", "all")
        for row in ("pretraining", "pretraining_aligned", "pooled"):
            for seg in ("cold", "long_tail", "short_history"):
                out[f"{name}.{row}_vs_{base}.{seg}"] = paired_ci(results, name, row, base, seg)
    return {k: v for k, v in out.items() if v is not None}


def rescore(name: str, row: str, result: dict) -> dict:
    """The row's exported model evaluated again by the current segment code (no training)."""
    from recsys.eval.segments import segment_report

    seg = segment_report(*_row_model(name, row, result))
    return {**result, "segments": seg["model"], "cannot_rank_cold": seg["cannot_rank_cold"],
            "baselines": {k: seg[k] for k in ("popularity", "newest_popular") if k in seg}}


def run_row(name: str, row: str, overrides: list[str], extra: list[str]) -> dict:
    spec = DATASETS[name]
    started = time.time()
    cfg = load_config(spec["config"], [f"run_name=foundation-{name}-{row}", *overrides, *extra])
    init_ray(cfg.cluster)
    quiet_ray_data()
    dataset = stages.prepare(cfg)
    pre = stages.pretrain(cfg, dataset)  # pooled with other shops' logs when pretrain.pool_with says so
    fine = stages.finetune(cfg, dataset, init_from=pre.model_path if pre else None)
    report = stages.evaluate(cfg, fine.model_path)
    seg = report["segments"]
    return {
        "overrides": overrides + extra,
        "wall_s": round(time.time() - started, 1),
        "segments": seg["model"],
        "cannot_rank_cold": seg["cannot_rank_cold"],
        "candidates": seg["candidates"],
        "baselines": {k: seg[k] for k in ("popularity", "newest_popular") if k in seg},
        "exported_epoch": report["training"]["finetune"]["exported_epoch"],
        "curves": {"finetune": [{k: h.get(k) for k in ("epoch", "loss", "valid_ndcg@10")} for h in fine.metrics["history"]],
                   "pretrain": [{k: h.get(k) for k in ("epoch", "loss")} for h in (pre.metrics["history"] if pre else [])]},
        "report": report["path"],
    }


POOL = ("online_retail", "movielens")  # the shops with titles: their item vectors share one text space


def flat(results: dict) -> dict[str, float]:
    """`<dataset>.<row>.<segment>.<metric>`; `<dataset>.text.…` is the recipe's text row (text_row)."""
    out = {}
    for name, rows in results.items():
        if DATASETS[name]["text"] and text_row(name) in rows:
            rows = {**rows, "text": rows[text_row(name)]}
        for row, r in rows.items():
            if "segments" not in r:
                continue
            for seg in SEGMENTS:
                for m in METRICS:
                    if m in r["segments"].get(seg, {}):
                        out[f"{name}.{row}.{seg}.{m}"] = r["segments"][seg][m]
            for base, segs in r["baselines"].items():
                for seg in SEGMENTS:
                    for m in METRICS:
                        if m in segs.get(seg, {}):
                            out.setdefault(f"{name}.{base}.{seg}.{m}", segs[seg][m])
    return out


def targets(keys: dict[str, float]) -> dict:
    def ratio(a: str, b: str):
        return round(keys[a] / keys[b], 3) if a in keys and keys.get(b) else None

    pretrain = {}
    for name in DATASETS:
        for row in ("pretraining", "pretraining_aligned", "pooled"):
            for seg in ("cold", "long_tail", "short_history"):
                r = ratio(f"{name}.{row}.{seg}.ndcg@10", f"{name}.text.{seg}.ndcg@10") if DATASETS[name]["text"] else \
                    ratio(f"{name}.{row}.{seg}.ndcg@10", f"{name}.attributes.{seg}.ndcg@10")
                if r is not None:
                    pretrain[f"{name}.{row}.{seg}"] = r
    cold = ratio("online_retail.text.cold.hr@10", "online_retail.newest_popular.cold.hr@10")
    text_all = {n: ratio(f"{n}.text.all.ndcg@10", f"{n}.id_only.all.ndcg@10") for n in ("online_retail", "movielens")}
    return {
        "online_retail_cold_hr10_vs_newest_popular": {"ratio": cold, "target": 2.0, "met": cold is not None and cold >= 2.0},
        "text_all_ndcg10_vs_id_only": {n: {"ratio": v, "target": 1.03, "met": v is not None and v >= 1.03} for n, v in text_all.items()},
        "pretraining_ndcg10_vs_no_pretraining": {"ratios": pretrain, "target": 1.05,
                                                 "met": any(v >= 1.05 for v in pretrain.values())},
    }


def table(results: dict) -> str:
    lines = [f"{'dataset / row':34}" + "".join(f"{s[:10] + ' ' + m:>20}" for s in ("all", "cold", "long_tail", "short_history")
                                                for m in ("hr@10",)) + f"{'all ndcg@10':>14}{'wall s':>9}"]
    for name, rows in results.items():
        baselines = next((r["baselines"] for r in rows.values() if "baselines" in r), {})
        for label, r in [*rows.items(), *baselines.items()]:
            if "skipped" in r:
                lines.append(f"{name + ' / ' + label:34}  n/a: {r['skipped']}")
                continue
            segs = r.get("segments", r)
            cells = "".join(f"{segs.get(s, {}).get('hr@10', float('nan')):20.4f}" for s in ("all", "cold", "long_tail", "short_history"))
            lines.append(f"{name + ' / ' + label:34}{cells}{segs['all'].get('ndcg@10', float('nan')):14.4f}{r.get('wall_s', ''):>9}")
    return "\n".join(lines)


def markdown(results: dict) -> str:
    """The ablation table of docs/model.md: HR@10 / NDCG@10 per segment, rows in ROWS order."""
    segs = ("all", "cold", "long_tail", "short_history", "cold_among_new")
    lines = ["| dataset | row | " + " | ".join(f"{s} HR@10 / NDCG@10" for s in segs) + " | wall s |",
             "|---|---|" + "---|" * len(segs) + "---|"]
    for name, rows in results.items():
        baselines = next((r["baselines"] for r in rows.values() if "baselines" in r), {})
        for label in [*[r for r in ROWS if r in rows], *baselines]:
            r = rows.get(label) or {"segments": baselines[label]}
            if "skipped" in r:
                lines.append(f"| {name} | {label} | n/a: {r['skipped']} |" + " |" * len(segs))
                continue
            cells = []
            for seg in segs:
                v = r["segments"].get(seg, {})
                cold_na = seg == "cold" and r.get("cannot_rank_cold")
                cells.append("—" if "hr@10" not in v else f"{v['hr@10']:.4f} / {v['ndcg@10']:.4f} ({v['rows']})"
                             + (" ✗ids" if cold_na else ""))
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + f" | {r.get('wall_s', '')} |")
    return "\n".join(lines)


def write(out: Path, results: dict, smoke: bool, paired: dict | None = None) -> None:
    keys = flat(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**keys, "targets": targets(keys), "paired_bootstrap": paired or {}, "results": results,
                               "protocol": "time split (Online Retail, MovieLens) / leave-one-out (Beauty); full ranking "
                               "over known + cold items, history excluded; test split",
                               "smoke": smoke, "machine": "2 CPU cores, no GPU"}, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every row (a smoke run: --set finetune.epochs=1)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--rescore", action="store_true",
                        help="evaluate the rows already in --out again (their exported models; no training)")
    args = parser.parse_args()
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results = previous.get("results", {})
    if args.rescore:
        results = {n: {row: rescore(n, row, r) if "report" in r else r for row, r in rows.items()} for n, rows in results.items()}
        args.datasets = []
    for name in args.datasets:
        spec = DATASETS[name]
        if not spec["file"](load_config(spec["config"])).is_file():
            print(f"{name}: data not found; this benchmark needs ../shared/datasets", file=sys.stderr)
            return 1
        for row in args.rows:
            overrides = row_overrides(row, spec)
            if isinstance(overrides, str):
                results.setdefault(name, {})[row] = {"skipped": overrides}
                continue
            print(f"== {name} / {row}: {' '.join(overrides + args.extra)}", flush=True)
            results.setdefault(name, {})[row] = run_row(name, row, overrides, args.extra)
            write(args.out, results, smoke=bool(args.extra))
            print(table(results), flush=True)
    paired = significance(results)
    write(args.out, results, smoke=bool(args.extra) or previous.get("smoke", False), paired=paired)
    print(table(results))
    print(markdown(results))
    print(json.dumps(paired, indent=2))
    print(json.dumps(targets(flat(results)), indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
