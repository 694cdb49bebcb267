"""The `recsys` command: one subcommand per stage, plus `demo`. Thin: parse, then call recsys.stages."""

from __future__ import annotations

import argparse
import json
import sys
import time

from recsys.config import ConfigError, load_config
from recsys.stages import PIPELINE_STAGES as STAGES


def stage_parser(prog: str | None = None, stage: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=f"recsys-platform: {stage or 'pipeline'} stage")
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/demo.yaml")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set finetune.epochs=3 (repeatable)",
    )
    return parser


def run_stage(stage: str, argv: list[str] | None = None) -> int:
    """Entry point shared by `recsys <stage>` and `ray_jobs/<stage>.py`."""
    args = stage_parser(f"recsys {stage}", stage).parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from recsys import stages
    from recsys.runtime import init_ray, quiet_ray_data

    init_ray(cfg.cluster)
    quiet_ray_data()
    t0 = time.perf_counter()
    try:
        if stage == "prepare":
            ds = stages.prepare(cfg)
            print(json.dumps({"dataset": str(ds.path), "counts": ds.manifest["counts"], "vocab": ds.manifest["vocab"]}, indent=2))
        elif stage in ("pretrain", "finetune", "ctr"):
            result = getattr(stages, stage)(cfg)
            if result is None:
                print(f"{stage} is disabled in the config ({stage}.enabled: false)")
            else:
                print(json.dumps({"model": str(result.model_path), "metrics": result.metrics}, indent=2))
        elif stage == "search":
            path = stages.search(cfg)
            if path is None:
                print("search encoder not fine-tuned: search.enabled is false or the logs hold no searches; the index uses the pretrained encoder")
            else:
                print(json.dumps({"encoder": str(path), **json.loads((path / "recsys.json").read_text())["metrics"]}, indent=2))
        elif stage == "index":
            release = stages.index(cfg)
            print(json.dumps({"index": str(release.path), **release.manifest}, indent=2))
        elif stage == "evaluate":
            from recsys.eval.evaluate import format_report

            report = stages.evaluate(cfg)
            print(format_report(report))
            print(f"report: {report['path']}")
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{stage} finished in {time.perf_counter() - t0:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = (*STAGES, "demo", "k8s", "data", "eval")
    if not argv or argv[0] not in commands:
        print(f"usage: recsys {{{','.join(commands)}}} --config FILE [--set key=value ...]", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "data":
        if not rest or rest[0] != "stats":
            print("usage: recsys data stats <dataset folder> [--out DIR]", file=sys.stderr)
            return 2
        from recsys.data.stats import main as stats_main

        return stats_main(rest[1:])
    if command == "eval":
        if not rest or rest[0] != "report":
            print("usage: recsys eval report --config FILE [--model DIR] [--set key=value ...]", file=sys.stderr)
            return 2
        from recsys.eval.report import main as report_main

        return report_main(rest[1:])
    if command == "k8s":
        from recsys.k8s.cli import main as k8s_main

        return k8s_main(rest)
    if command == "demo":
        from recsys.demo import run_demo

        return run_demo(rest)
    return run_stage(command, rest)


if __name__ == "__main__":
    sys.exit(main())
