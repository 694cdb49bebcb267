"""`recsys k8s submit|status|wait|logs`: run pipeline stages as RayJobs on a KubeRay cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys.entrypoints import PIPELINE_STAGES
from recsys.k8s.runner import JobState, RayJobRunner, RunnerError

REPO_MANIFESTS = Path(__file__).resolve().parents[2] / "k8s"


def register(commands) -> argparse.ArgumentParser:
    """Add `k8s` and its subcommands to the `recsys` subparsers `commands`; it runs `run`."""
    text = "Run pipeline stages as KubeRay RayJobs."
    parser = commands.add_parser("k8s", help="run pipeline stages as KubeRay RayJobs", description=text)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The cluster options and the submit|status|wait|logs subcommands (parsed: `args.k8s_command`)."""
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("-n", "--namespace", default="recsys")
    sub = parser.add_subparsers(dest="k8s_command", metavar="COMMAND", title="commands", required=True)
    submit = sub.add_parser("submit", help="create the RayJob of a stage")
    submit.add_argument("stage", help=f"one of: {', '.join(PIPELINE_STAGES)}")
    submit.add_argument("--manifests", default=str(REPO_MANIFESTS), help="folder with rendered rayjob-*-<stage>.yaml")
    submit.add_argument("--wait", action="store_true", help="follow it to a terminal state")
    submit.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait (with --wait)")
    for name, text in (("status", "print a RayJob's state"), ("logs", "print the job's driver output")):
        p = sub.add_parser(name, help=text)
        p.add_argument("name")
    wait = sub.add_parser("wait", help="follow a RayJob until it finishes")
    wait.add_argument("name")
    wait.add_argument("--timeout", type=float, default=3600.0)


def _api(kubeconfig: str | None, context: str | None):
    from kubernetes import client, config

    try:
        if kubeconfig or context or not _in_cluster():
            return config.new_client_from_config(config_file=kubeconfig, context=context)
        config.load_incluster_config()
        return client.ApiClient()
    except (config.ConfigException, FileNotFoundError) as exc:
        raise RunnerError(f"cannot load Kubernetes credentials: {exc}; pass --kubeconfig or set KUBECONFIG") from None


def _in_cluster() -> bool:
    return Path("/var/run/secrets/kubernetes.io/serviceaccount/token").is_file()


def _show(state: JobState) -> None:
    print(f"{state.name}: deployment={state.deployment_status or '-'} job={state.job_status or '-'}"
          + (f" ({state.message})" if state.message else ""), flush=True)


def run(args: argparse.Namespace) -> int:
    """`recsys k8s ...`: 0 when the job (or the query) succeeded, 1 otherwise (the message says why)."""
    try:
        runner = RayJobRunner(_api(args.kubeconfig, args.context), args.namespace)
        if args.k8s_command == "submit":
            name = runner.submit(args.stage, Path(args.manifests))
            print(f"created RayJob {name} in namespace {args.namespace}")
            if not args.wait:
                return 0
            state = runner.wait(name, args.timeout, _show)
        elif args.k8s_command == "status":
            state = runner.status(args.name)
            _show(state)
            return 0
        elif args.k8s_command == "logs":
            print(runner.logs(args.name), end="")
            return 0
        else:
            state = runner.wait(args.name, args.timeout, _show)
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if state.succeeded else 1
