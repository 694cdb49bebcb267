"""The `recsys` command: argparse subcommands, thin over the library.

    recsys <stage> --config FILE [--set KEY=VALUE ...]     prepare, pretrain, finetune, ctr, search, ads, index, evaluate, forecast
    recsys forecast report --config FILE [--items ID,ID]    the latest forecast's fan chart and backtest PNGs
    recsys eval report --config FILE [--model DIR] [--set ...]
    recsys data stats <dataset folder> [--out DIR]
    recsys k8s [--kubeconfig F] [--context C] [-n NS] submit|status|wait|logs ...
    recsys <extension> ...                                  commands other packages register (serving: `demo`)

`--config` and `--set` are declared once, in config_parent(); every command that reads a config,
`ray_jobs/`, `serving.deploy` and the benchmarks build on it. Extension commands come from the
entry-point group `recsys.commands`: each is a function `register(subparsers, parent)` that adds
its subcommand (with `parent` among its parents) and sets `func`. That is how `recsys demo` runs the
Serve app while nothing under `recsys/` imports `serving`.

Exit codes: 0 done, 1 a stage failed (the message says why), 2 a bad command line or config.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path

from recsys.config import ConfigError, RecsysConfig, load_config
from recsys.entrypoints import PIPELINE_STAGES

COMMANDS_GROUP = "recsys.commands"
# Failures of a stage that the user can act on: printed as `error: ...`, exit 1 (no traceback).
STAGE_ERRORS = (FileNotFoundError, ValueError, RuntimeError)
STAGE_HELP = {
    "prepare": "validate, quarantine, shape and split the behaviour logs (Ray Data) into a dataset version",
    "pretrain": "pretrain the sequence encoder on masked items (Ray Train + DeepSpeed)",
    "finetune": "fine-tune the encoder for next-item retrieval (from the pretrained model when pretrain is on)",
    "ctr": "train the CTR ranker on impressions (BCE), from the latest fine-tuned model",
    "search": "fine-tune the search text encoder on the logs' (query, clicked item) pairs (or the catalog's own "
              "pseudo-queries); `recsys search eval` scores search on judged queries",
    "ads": "the ad world, the ad pCTR model fine-tuned from the latest retrieval model (BCE on ad impressions) and "
           "its calibration on the valid day",
    "index": "the fine-tuned model's item vectors (and item texts) → a versioned FAISS index",
    "evaluate": "evaluate the latest fine-tuned model (the config's protocol) and write report.json",
    "forecast": "weekly demand per product from the sales: backtest every forecaster, publish the default one for "
                "/forecast; `recsys forecast report` plots the latest",
}


def _forecast_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["run", "report"], default="run",
                        help="run: the stage (default); report: the fan chart and backtest PNGs of the latest forecast")
    parser.add_argument("--items", metavar="ID,ID", help="report: products for the fan chart (default: the top sellers)")


def _search_arguments(parser: argparse.ArgumentParser) -> None:
    from recsys.search import judged

    parser.add_argument("action", nargs="?", choices=["run", "eval"], default="run",
                        help="run: the stage (default); eval: the config's search settings on a judged query set "
                             "(--catalog, --qrels, --queries)")
    judged.add_arguments(parser)


# Arguments a stage's command takes beside --config/--set (the same in `recsys <stage>` and ray_jobs/).
STAGE_ARGUMENTS = {"forecast": _forecast_arguments, "search": _search_arguments}


def config_parent(default_config: str | None = None) -> argparse.ArgumentParser:
    """The parent parser of every command that reads a config: `--config FILE`, `--set KEY=VALUE`.

    Use it as `argparse.ArgumentParser(parents=[config_parent()])`. `--config` is required unless
    a `default_config` is given (the benchmarks have one). Parsed: `args.config`, `args.overrides`.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config", metavar="FILE", required=default_config is None, default=default_config,
        help="YAML config, e.g. configs/demo.yaml" + (f" (default: {default_config})" if default_config else ""),
    )
    parent.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set finetune.epochs=3 (repeatable)",
    )
    return parent


def config_of(args: argparse.Namespace) -> RecsysConfig:
    """The config that `--config`/`--set` name; a ConfigError is printed by the CLI (exit 2)."""
    return load_config(args.config, args.overrides)


# ---- commands -------------------------------------------------------------------------------
def stage_command(stage: str, args: argparse.Namespace) -> int:
    """`recsys <stage>` (and `ray_jobs/<script>.py`): run one pipeline stage on Ray, print its result."""
    cfg = config_of(args)
    from recsys import stages
    from recsys.artifacts import ArtifactStore
    from recsys.runtime import init_ray, quiet_ray_data

    if stage == "search" and getattr(args, "action", "run") == "eval":  # reads files, needs no Ray
        from recsys.search import judged

        try:
            return judged.run_command(cfg, args)
        except STAGE_ERRORS as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if getattr(args, "action", "run") == "run":  # a report reads artifacts only
        init_ray(cfg.cluster)
    quiet_ray_data()
    t0 = time.perf_counter()
    try:
        if stage == "prepare":
            ds = stages.prepare(cfg)
            print(json.dumps({"dataset": str(ds.path), "counts": ds.manifest["counts"], "vocab": ds.manifest["vocab"]}, indent=2))
        elif stage in ("pretrain", "finetune", "ctr", "ads"):
            result = getattr(stages, stage)(cfg)
            if result is None:
                print(f"{stage} is disabled in the config ({stage}.enabled: false)")
            else:
                print(json.dumps({"model": str(result.model_path), "metrics": result.metrics}, indent=2))
        elif stage == "search":
            result = stages.search(cfg)
            if result is None:
                print("search encoder not fine-tuned: search.enabled is false or the logs hold no searches; the index uses the pretrained encoder")
            else:
                guard = result.export.meta.extra.get("safeguard")
                print(json.dumps({"encoder": str(result.model_path), **result.metrics, **({"safeguard": guard} if guard else {})}, indent=2))
                if guard and not guard["ship"]:
                    print(f"the adapted encoder scored {guard['adapted']:.4f} dense nDCG@10 on its held-out queries, below the "
                          f"pretrained {guard['pretrained']:.4f}: the index keeps the pretrained encoder")
        elif stage == "index":
            release = stages.index(cfg)
            print(json.dumps({"index": str(release.path), **release.manifest}, indent=2))
        elif stage == "forecast":
            from recsys.forecast.report import format_backtest, write_report

            if getattr(args, "action", "run") == "report":
                release = ArtifactStore.of(cfg).latest("forecast")
                paths = write_report(release, args.items.split(",") if args.items else None)
                print(format_backtest(release.manifest))
                print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
            else:
                release = stages.forecast(cfg)
                if release is None:
                    print("forecast is disabled in the config (forecast.enabled: false)")
                else:
                    print(format_backtest(release.manifest))
                    print(f"forecast: {release.path}")
        elif stage == "evaluate":
            from recsys.eval.evaluate import format_report

            report = stages.evaluate(cfg)
            print(format_report(report))
            print(f"report: {report['path']}")
        else:
            raise ValueError(f"the CLI has no output for stage {stage!r}")
    except STAGE_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{stage} finished in {time.perf_counter() - t0:.1f}s")
    return 0


def eval_report(args: argparse.Namespace) -> int:
    """`recsys eval report`: evaluate a model, then write table.md and curves.png beside report.json."""
    cfg = config_of(args)
    from recsys import stages
    from recsys.eval.report import write_report

    try:
        report = stages.evaluate(cfg, Path(args.model) if args.model else None)
    except STAGE_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    paths = write_report(report)
    print(paths["table"].read_text())
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0


# ---- the parser -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys", description="recsys-platform: the pipeline stages, their tools, and registered commands.",
        epilog="`recsys COMMAND --help` describes a command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    parent = config_parent()
    for stage in PIPELINE_STAGES:
        text = STAGE_HELP.get(stage, f"the {stage} stage")
        command = commands.add_parser(stage, parents=[parent], help=text, description=text)
        command.set_defaults(func=partial(stage_command, stage))
        STAGE_ARGUMENTS.get(stage, lambda _: None)(command)
    _add_eval(commands, parent)
    _add_data(commands)
    from recsys.k8s import cli as k8s_cli

    k8s_cli.register(commands)
    _add_extensions(commands, parent)
    return parser


def _add_eval(commands, parent: argparse.ArgumentParser) -> None:
    group = commands.add_parser("eval", help="evaluation reports", description="evaluation reports")
    sub = group.add_subparsers(dest="eval_command", metavar="COMMAND", title="commands", required=True)
    text = "evaluate the latest (or a given) model; write report.json, a metrics table (table.md) and curves.png"
    report = sub.add_parser("report", parents=[parent], help=text, description=text)
    report.add_argument("--model", metavar="DIR", help="a fine-tuned model folder (default: the latest of the config's run)")
    report.set_defaults(func=eval_report)


def _add_data(commands) -> None:
    from recsys.data import stats

    group = commands.add_parser("data", help="prepared-dataset tools", description="prepared-dataset tools")
    sub = group.add_subparsers(dest="data_command", metavar="COMMAND", title="commands", required=True)
    text = "key figures and plots of a prepared dataset"
    parser = sub.add_parser("stats", help=text, description=text)
    stats.add_arguments(parser)
    parser.set_defaults(func=stats.run)


def _add_extensions(commands, parent: argparse.ArgumentParser) -> None:
    """Commands registered under the entry-point group `recsys.commands` (e.g. serving's `demo`)."""
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            ep.load()(commands, parent)
        except Exception as exc:  # one broken extension must not take the stage commands down with it
            print(f"warning: command {ep.name!r} ({ep.value}) could not be registered: {type(exc).__name__}: {exc}",
                  file=sys.stderr)


def _execute(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, usage already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    func = getattr(args, "func", None)
    if func is None:  # `recsys` alone
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_stage(stage: str, argv: list[str] | None = None) -> int:
    """`ray_jobs/<script>.py`: the `recsys <stage>` command on its own (same options, output, exit codes)."""
    text = STAGE_HELP.get(stage, f"the {stage} stage")
    parser = argparse.ArgumentParser(prog=f"recsys {stage}", description=text, parents=[config_parent()])
    parser.set_defaults(func=partial(stage_command, stage))
    STAGE_ARGUMENTS.get(stage, lambda _: None)(parser)
    return _execute(parser, argv)


def main(argv: list[str] | None = None) -> int:
    return _execute(build_parser(), sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
