"""The Helm chart: lint, render every scenario, validate every object, check security and wiring."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from recsys.config import validate_config
from recsys.k8s.crd_validation import crd_dir, validate_ray_object
from tests.k8s.conftest import CHART, REPO, SCENARIOS, RenderError, render

pytestmark = pytest.mark.k8s
K8S_VERSION = "1.35.0"  # the kubectl/helm 4 client version CI installs
CASES = [None, *SCENARIOS]
IDS = ["defaults", *[p.stem for p in SCENARIOS]]


def values_args(path: Path | None) -> list[str]:
    return ["-f", str(path)] if path else []


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def rendered(request, helm) -> list[dict]:
    return render(helm, *values_args(request.param))


def pod_specs(obj: dict) -> list[tuple[str, dict]]:
    """Every pod spec inside a rendered object, with a label saying where it sits."""
    out = []
    spec = obj.get("spec", {})
    for key in ("rayClusterSpec", "rayClusterConfig"):
        if key in spec:
            out += pod_specs({"kind": "RayCluster", "spec": spec[key]})
    if obj["kind"] == "RayCluster":
        out.append(("head", spec["headGroupSpec"]["template"]["spec"]))
        out += [(f"worker {g['groupName']}", g["template"]["spec"]) for g in spec.get("workerGroupSpecs", [])]
    if "submitterPodTemplate" in spec:
        out.append(("submitter", spec["submitterPodTemplate"]["spec"]))
    return out


def test_scenarios_exist():
    assert {p.stem for p in SCENARIOS} >= {"cpu-only-values", "gpu-values", "serving-only-values",
                                           "monitoring-values", "object-storage-values"}


@pytest.mark.parametrize("values", CASES, ids=IDS)
def test_helm_lint_strict(helm, values):
    done = subprocess.run([helm, "lint", "--strict", str(CHART), *values_args(values)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", CASES, ids=IDS)
def test_helm3_renders_the_same_objects(helm, helm3, values):
    """The chart supports Helm 3 and 4: both lint it and render identical objects."""
    done = subprocess.run([helm3, "lint", "--strict", str(CHART), *values_args(values)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert render(helm3, *values_args(values)) == render(helm, *values_args(values))


def test_builtin_kinds_validate_strictly(rendered):
    for obj in rendered:
        if obj["apiVersion"].startswith(("ray.io/", "monitoring.coreos.com/")):
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_ray_kinds_validate_against_kuberay_crds(rendered):
    if not crd_dir().is_dir():
        pytest.skip(f"KubeRay CRDs not found at {crd_dir()} (../shared/kuberay/crds)")
    for obj in (o for o in rendered if o["apiVersion"] == "ray.io/v1"):
        assert validate_ray_object(obj) == [], obj["metadata"]["name"]


def test_restricted_pod_security_everywhere(rendered):
    pods = [(f"{o['kind']}/{o['metadata']['name']} {where}", spec) for o in rendered for where, spec in pod_specs(o)]
    for where, spec in pods:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"]["type"] == "RuntimeDefault", where
        mounts_tmp = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in mounts_tmp, f"{where}: /tmp must be an emptyDir (read-only root)"
            assert "resources" in c, where


def test_no_literal_secrets(rendered):
    assert not [o for o in rendered if o["kind"] == "Secret"]  # the chart never carries credentials
    for obj in rendered:
        for _, spec in pod_specs(obj):
            for c in spec["containers"]:
                for env in c.get("env", []):
                    if any(word in env["name"].upper() for word in ("KEY", "SECRET", "TOKEN", "PASSWORD")):
                        assert "valueFrom" in env and "secretKeyRef" in env["valueFrom"], env


def test_dashboard_is_cluster_internal_and_token_auth_on(rendered):
    for obj in rendered:
        spec = obj.get("spec", {})
        for cluster in [spec] if obj["kind"] == "RayCluster" else [spec.get("rayClusterSpec"), spec.get("rayClusterConfig")]:
            if cluster:
                assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"
                assert cluster["authOptions"]["mode"] == "token"


def test_networkpolicy_limits_control_ports(rendered):
    (policy,) = [o for o in rendered if o["kind"] == "NetworkPolicy"]
    rules = policy["spec"]["ingress"]
    control = {8265, 6379, 10001}
    for rule in rules:
        ports = {p["port"] for p in rule.get("ports", [])}
        if ports & control:
            for peer in rule["from"]:
                # Only this release, job submitters or the operator's namespace reach control ports.
                labels = peer.get("podSelector", {}).get("matchLabels", {})
                ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
                assert labels.get("app.kubernetes.io/instance") == "rs" or labels.get(
                    "recsys-platform/job-submitter") == "true" or ns.get("kubernetes.io/metadata.name") == "kuberay-operator", rule
                if ns:
                    assert ports == {8265}
        if not rule.get("ports"):
            assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "rs"


def test_mounted_config_is_a_valid_recsys_config(rendered):
    (cm,) = [o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")]
    cfg = validate_config(yaml.safe_load(cm["data"]["config.yaml"]), source="rendered ConfigMap")
    assert cfg.artifacts.root.startswith(("/data", "s3://"))


def test_rayjob_entrypoints_exist_and_read_the_mounted_config(rendered):
    jobs = [o for o in rendered if o["kind"] == "RayJob"]
    for job in jobs:
        python, script, flag, config = job["spec"]["entrypoint"].split()
        assert python == "python" and flag == "--config" and config == "/etc/recsys/config.yaml"
        assert script.startswith("/app/")  # the image copies the repository to /app
        assert (REPO / script.removeprefix("/app/")).is_file(), script


def test_every_pipeline_stage_has_a_rayjob_running_its_script(helm):
    """The chart's stage → script map covers every stage of recsys.entrypoints (a new stage, like ads,
    gets a RayJob by being listed in jobs.stages), and each job runs that stage's ray_jobs script."""
    from recsys.entrypoints import STAGE_SCRIPTS

    objs = render(helm, "--set", "jobs.enabled=true", "--set-json", f"jobs.stages={list(STAGE_SCRIPTS)}".replace("'", '"'))
    jobs = {o["metadata"]["labels"]["recsys-platform/stage"]: o["spec"]["entrypoint"].split()[1] for o in objs if o["kind"] == "RayJob"}
    assert jobs == {stage: f"/app/ray_jobs/{script}" for stage, script in STAGE_SCRIPTS.items()}


def test_rayservice_serve_config_is_the_generated_one(rendered):
    """serveConfigV2 equals serving/serve_config.py's output for the mounted config, parses as
    Ray's ServeDeploySchema, and names the typed builder with valid arguments."""
    from ray.serve.schema import ServeDeploySchema

    from serving.app import ServeArgs
    from serving.serve_config import serve_config

    (cm,) = [o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")]
    cfg = validate_config(yaml.safe_load(cm["data"]["config.yaml"]))
    for svc in (o for o in rendered if o["kind"] == "RayService"):
        rendered_config = yaml.safe_load(svc["spec"]["serveConfigV2"])
        assert rendered_config == serve_config(cfg, "/etc/recsys/config.yaml")
        head = svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in head["env"]}
        assert {k: env.get(k) for k in ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_HA_PROXY")} == {
            k: SERVE_ENV_HAPROXY.get(k) if cfg.serve.ingress == "haproxy" else None for k in SERVE_ENV_HAPROXY}
        (app,) = ServeDeploySchema.model_validate(rendered_config).applications
        assert app.import_path == "serving.app:build_app"
        ServeArgs.model_validate(app.args)


SERVE_ENV_HAPROXY = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}  # recsys.runtime.serve_env


def test_index_version_value_becomes_the_deployments_user_config(helm):
    """`rayService.indexVersion` is the in-place model swap: it lands in user_config, not args."""
    from serving.serve_config import serve_config

    out = render(helm, "--set", "rayService.enabled=true", "--set", "rayService.indexVersion=v-abc.flat-1234",
                 "--set", "config.serve.ingress=proxy")
    (svc,) = [o for o in out if o["kind"] == "RayService"]
    (cm,) = [o for o in out if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")]
    cfg = validate_config(yaml.safe_load(cm["data"]["config.yaml"]))
    rendered_config = yaml.safe_load(svc["spec"]["serveConfigV2"])
    assert rendered_config == serve_config(cfg, "/etc/recsys/config.yaml", "v-abc.flat-1234")
    assert rendered_config["applications"][0]["deployments"][0]["user_config"] == {"index_version": "v-abc.flat-1234"}
    env = {e["name"] for e in svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in env  # ingress: proxy


def test_generated_serve_config_is_current():
    import sys

    done = subprocess.run([sys.executable, "-m", "serving.serve_config", "--check"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ("config:\n  finetune:\n    epoch: 3\n", "/config/finetune"),
        ("config:\n  pretrain:\n    zero_stage: 4\n", "/config/pretrain/zero_stage"),
        ("rayCluster:\n  head:\n    numCpu: '1'\n", "/rayCluster/head"),
        ("jobs:\n  stages: [prepare, train]\n", "/jobs/stages/1"),
        ("storage:\n  mode: nfs\n", "/storage/mode"),
    ],
)
def test_broken_values_are_rejected_naming_the_key(helm, tmp_path, values, key):
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(values)
    with pytest.raises(RenderError) as err:
        render(helm, "-f", str(bad))
    assert key in str(err.value)


def test_object_store_needs_a_secret_reference(helm):
    with pytest.raises(RenderError, match="storage.objectStore.secretName is required"):
        render(helm, "--set", "storage.mode=objectStore", "--set", "storage.objectStore.uri=s3://b/x", "--set", "jobs.enabled=true")


def test_broken_rayjob_is_rejected_by_the_crd_schema(helm):
    if not crd_dir().is_dir():
        pytest.skip(f"KubeRay CRDs not found at {crd_dir()}")
    (job, *_) = [o for o in render(helm, "--set", "jobs.enabled=true") if o["kind"] == "RayJob"]
    job["spec"]["entrypointNumCpus"] = "two"
    job["spec"]["submitterPodTemplate"]["spec"]["containerz"] = []
    problems = validate_ray_object(job)
    assert any(p.startswith("spec.entrypointNumCpus") for p in problems), problems
    assert any("containerz" in p for p in problems), problems


def test_values_schema_is_current():
    done = subprocess.run([str(Path(__import__("sys").executable)), str(REPO / "tools" / "values_schema.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_chart_value_is_documented():
    """Every key down to two levels (outside `config`, which recsys/config.py documents) has a
    `# --` comment block directly above it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented, in_config = [], False
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if not stripped or stripped.startswith(("#", "-")) or indent > 2:
            continue
        if indent == 0:
            in_config = stripped.startswith("config:")
        elif in_config:
            continue
        j = i - 1
        while j >= 0 and lines[j].lstrip().startswith("#") and not lines[j].lstrip().startswith("# --"):
            j -= 1  # continuation lines of a comment block
        if j < 0 or not lines[j].lstrip().startswith("# --"):
            undocumented.append(f"line {i + 1}: {stripped}")
    assert not undocumented, undocumented


def test_grafana_dashboard_shows_the_platforms_own_metrics():
    """The dashboard queries the metric names the training loop and the Serve deployment define."""
    import json
    import re

    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    sources = (REPO / "recsys" / "train" / "loop.py").read_text() + (REPO / "serving" / "metrics.py").read_text()
    defined = set(re.findall(r'(?:Gauge|Counter|Histogram)\(\s*"(recsys_[a-z_]+)"', sources))
    assert {"recsys_train_loss", "recsys_serve_requests", "recsys_serve_latency_ms", "recsys_serve_stage_ms"} <= defined
    for name in defined:
        assert f"ray_{name}" in queries, f"{name} is exported but not on the dashboard"


def test_serve_auth_is_on_by_default_with_tokens_from_a_secret(helm):
    """The serving cluster's pods get the three role tokens from the Secret the values name, under
    the env names the config gives; training and job pods get none; no token value is rendered; off
    only by an explicit value."""
    objects = render(helm, "--set", "rayService.enabled=true", "--set", "jobs.enabled=true")

    def token_env(obj):
        return {e["name"]: e for _, spec in pod_specs(obj) for c in spec["containers"] for e in c.get("env", [])
                if e["name"].endswith("_TOKEN") or e["name"].startswith("SHOP_")}

    (service,) = [o for o in objects if o["kind"] == "RayService"]
    assert len(pod_specs(service)) == 2  # head and the serve workers
    for where, spec in pod_specs(service):
        env = {e["name"]: e for c in spec["containers"] for e in c.get("env", [])}
        for name, key in (("RECSYS_READ_TOKEN", "read-token"), ("RECSYS_WRITE_TOKEN", "write-token"), ("RECSYS_ADMIN_TOKEN", "admin-token")):
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "rs-recsys-platform-serve-tokens", "key": key}, where
            assert "value" not in env[name]
    others = [o for o in objects if o["kind"] in ("RayCluster", "RayJob")]
    assert others and not any(token_env(o) for o in others)  # training and jobs never hold a token
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    assert yaml.safe_load(config["data"]["config.yaml"])["serve"]["auth"]["enabled"] is True
    # One source for the env names: the config's token_env; the Secret's keys: security.serveAuth.keys.
    renamed = render(helm, "--set", "rayService.enabled=true", "--set", "config.serve.auth.token_env.read=SHOP_READ",
                     "--set", "security.serveAuth.keys.read=shop-read", "--set", "security.serveAuth.secretName=shop-tokens")
    (service,) = [o for o in renamed if o["kind"] == "RayService"]
    env = token_env(service)
    assert env["SHOP_READ"]["valueFrom"]["secretKeyRef"] == {"name": "shop-tokens", "key": "shop-read"} and "RECSYS_READ_TOKEN" not in env
    off = render(helm, "--set", "rayService.enabled=true", "--set", "config.serve.auth.enabled=false")
    assert "RECSYS_WRITE_TOKEN" not in yaml.safe_dump([o for o in off if o["kind"] != "ConfigMap"])


def test_serving_defaults_survive_losing_a_replica(helm):
    """The production default: at least two Serve replicas, autoscaling above, on at least two pods."""
    (service,) = [o for o in render(helm, "--set", "rayService.enabled=true") if o["kind"] == "RayService"]
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (deployment,) = [d for app in config["applications"] for d in app.get("deployments", []) if "autoscaling_config" in d]
    auto = deployment["autoscaling_config"]
    assert auto["min_replicas"] >= 2 and auto["max_replicas"] > auto["min_replicas"]
    (workers,) = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert workers["minReplicas"] >= 2 and workers["replicas"] >= 2
