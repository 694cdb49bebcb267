"""Submit pipeline stages as KubeRay RayJobs and follow them, with the `kubernetes` client.

The RayJob submitted for a stage is the one the Helm chart renders (k8s/rayjob-*-<stage>.yaml, or
a folder of your own rendered manifests), renamed with a timestamp so every submission is a new
object. It is validated against the KubeRay CRD schema before it is sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from recsys.entrypoints import PIPELINE_STAGES as STAGES
from recsys.k8s.crd_validation import CRDNotFoundError, validate_ray_object

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
TERMINAL_JOB_STATUS = {"SUCCEEDED", "FAILED", "STOPPED"}
TERMINAL_DEPLOYMENT_STATUS = {"Complete", "Failed"}


class RunnerError(RuntimeError):
    """A message for the user; the CLI prints it and exits non-zero."""


@dataclass(frozen=True)
class JobState:
    name: str
    deployment_status: str | None
    job_status: str | None
    message: str | None

    @property
    def finished(self) -> bool:
        return self.job_status in TERMINAL_JOB_STATUS or self.deployment_status in TERMINAL_DEPLOYMENT_STATUS

    @property
    def succeeded(self) -> bool:
        return self.job_status == "SUCCEEDED"


def explain(exc: ApiException, action: str, namespace: str) -> RunnerError:
    reasons = {
        401: "unauthorized: the API server rejected the credentials; refresh your kubeconfig (kubectl get pods works?)",
        403: f"forbidden: your account may not {action} in namespace {namespace!r}; ask for a Role granting "
             "create/get/list/watch on rayjobs.ray.io (and get on pods/log)",
        404: f"not found while trying to {action} in namespace {namespace!r}",
        409: f"conflict: {action}: an object with that name already exists in namespace {namespace!r}",
    }
    return RunnerError(reasons.get(exc.status, f"Kubernetes API error {exc.status} while trying to {action}: {exc.reason}"))


def load_stage_manifest(stage: str, manifests: Path) -> dict:
    if stage not in STAGES:
        raise RunnerError(f"unknown stage {stage!r}; choose one of: {', '.join(STAGES)}")
    found = sorted(Path(manifests).glob(f"rayjob-*-{stage}.yaml"))
    if not found:
        raise RunnerError(
            f"no RayJob manifest for stage {stage!r} in {manifests}; run `make manifests` or point --manifests at "
            "a folder of rendered chart output (helm template ... --set jobs.enabled=true)"
        )
    return yaml.safe_load(found[0].read_text())


class RayJobRunner:
    def __init__(self, api: client.ApiClient, namespace: str):
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.extensions = client.ApiextensionsV1Api(api)

    def check_kuberay(self) -> None:
        try:
            self.extensions.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        except ApiException as exc:
            if exc.status == 404:
                raise RunnerError(
                    "the KubeRay CRD rayjobs.ray.io is not installed on this cluster; install the operator first: "
                    "helm install kuberay-operator kuberay/kuberay-operator --namespace kuberay-operator --create-namespace"
                ) from None
            if exc.status != 403:  # may not read CRDs: try the RayJob call itself
                raise explain(exc, "read the RayJob CRD", self.namespace) from None

    def submit(self, stage: str, manifests: Path, suffix: str | None = None) -> str:
        body = load_stage_manifest(stage, manifests)
        body["metadata"]["name"] = f"{body['metadata']['name']}-{suffix or time.strftime('%Y%m%d%H%M%S')}"[:63]
        body["metadata"]["namespace"] = self.namespace
        try:
            problems = validate_ray_object(body)
        except CRDNotFoundError:
            problems = []  # no local CRD copy: the API server validates
        if problems:
            raise RunnerError("the RayJob is invalid: " + "; ".join(problems[:5]))
        self.check_kuberay()
        try:
            created = self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        except ApiException as exc:
            raise explain(exc, f"create RayJob {body['metadata']['name']}", self.namespace) from None
        return created["metadata"]["name"]

    def status(self, name: str) -> JobState:
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as exc:
            raise explain(exc, f"read RayJob {name}", self.namespace) from None
        return _state(obj)

    def wait(self, name: str, timeout_s: float, on_change: Callable[[JobState], None] | None = None) -> JobState:
        """Watch the RayJob until a terminal state; RunnerError when `timeout_s` passes first."""
        deadline = time.monotonic() + timeout_s
        state = self.status(name)
        last = None
        while True:
            if state != last and on_change:
                on_change(state)
            last = state
            if state.finished:
                return state
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunnerError(
                    f"RayJob {name} did not finish within {timeout_s:.0f}s (last: {state.deployment_status}/{state.job_status})"
                )
            stream = watch.Watch().stream(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                field_selector=f"metadata.name={name}", timeout_seconds=max(1, int(min(remaining, 60))),
            )
            try:
                for event in stream:
                    state = _state(event["object"])
                    if state != last and on_change:
                        on_change(state)
                    last = state
                    if state.finished or time.monotonic() >= deadline:
                        break
            except ApiException as exc:
                raise explain(exc, f"watch RayJob {name}", self.namespace) from None
            if not state.finished and time.monotonic() < deadline:
                state = self.status(name)  # the watch ended (server timeout): re-read, then watch again

    def logs(self, name: str, tail_lines: int | None = None) -> str:
        """Logs of the submitter pod (it streams the Ray job's driver output)."""
        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}").items
            if not pods:
                raise RunnerError(f"no submitter pod for RayJob {name} yet (label job-name={name}); try again shortly")
            pod = sorted(pods, key=lambda p: p.metadata.creation_timestamp or 0)[-1]
            kwargs = {"tail_lines": tail_lines} if tail_lines else {}
            return self.core.read_namespaced_pod_log(pod.metadata.name, self.namespace, **kwargs)
        except ApiException as exc:
            raise explain(exc, f"read logs of RayJob {name}", self.namespace) from None


def _state(obj: dict) -> JobState:
    status = obj.get("status") or {}
    return JobState(obj["metadata"]["name"], status.get("jobDeploymentStatus"), status.get("jobStatus"), status.get("message"))
