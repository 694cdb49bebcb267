"""`recsys k8s` against an in-process API server: create, watch to SUCCEEDED/FAILED, timeouts, errors."""

import pytest
from kubernetes import config

from recsys.cli import main
from recsys.entrypoints import PIPELINE_STAGES
from recsys.k8s.cli import REPO_MANIFESTS
from recsys.k8s.runner import RayJobRunner, RunnerError
from tests.k8s.fake_apiserver import FakeKubeAPI

pytestmark = pytest.mark.k8s
RUNNING = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}


@pytest.fixture
def api():
    with FakeKubeAPI() as server:
        yield server


@pytest.fixture
def kubeconfig(api, tmp_path):
    return api.kubeconfig(tmp_path / "kubeconfig")


def k8s(kubeconfig, *args):
    return main(["k8s", "--kubeconfig", kubeconfig, *args])


def test_submit_creates_the_charts_rayjob_and_waits_to_success(api, kubeconfig, capsys):
    api.script = [{"jobDeploymentStatus": "Initializing"}, RUNNING,
                  {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}]
    assert k8s(kubeconfig, "submit", "finetune", "--wait", "--timeout", "20") == 0
    out = capsys.readouterr().out
    ((namespace, name), job), = api.rayjobs.items()
    assert namespace == "recsys" and name.startswith("recsys-platform-finetune-")
    assert job["spec"]["entrypoint"] == "python /app/ray_jobs/finetune.py --config /etc/recsys/config.yaml"
    assert f"created RayJob {name}" in out
    assert "job=RUNNING" in out and out.rstrip().endswith("deployment=Complete job=SUCCEEDED")
    assert k8s(kubeconfig, "status", name) == 0
    assert k8s(kubeconfig, "logs", name) == 0
    assert "driver: finished" in capsys.readouterr().out


def test_failed_job_exits_nonzero(api, kubeconfig, capsys):
    api.script = [RUNNING, {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "message": "driver exited 1"}]
    assert k8s(kubeconfig, "submit", "prepare", "--wait", "--timeout", "20") == 1
    assert "job=FAILED (driver exited 1)" in capsys.readouterr().out


def test_wait_times_out_with_a_message(api, kubeconfig, capsys):
    api.script = [RUNNING]
    assert k8s(kubeconfig, "submit", "evaluate") == 0
    (_, name), = api.rayjobs
    assert k8s(kubeconfig, "wait", name, "--timeout", "2") == 1
    assert "did not finish within 2s" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda api: setattr(api, "crd_installed", False), "KubeRay CRD rayjobs.ray.io is not installed"),
        (lambda api: api.forbidden_namespaces.add("recsys"), "forbidden: your account may not create RayJob"),
    ],
)
def test_missing_crd_and_403_are_explained(api, kubeconfig, capsys, setup, expected):
    setup(api)
    assert k8s(kubeconfig, "submit", "pretrain") == 1
    assert expected in capsys.readouterr().err


def test_401_404_409(api, kubeconfig, tmp_path, capsys):
    wrong = api.kubeconfig(tmp_path / "wrong", token="nope")
    assert k8s(wrong, "status", "x") == 1
    assert "unauthorized" in capsys.readouterr().err
    assert k8s(kubeconfig, "status", "no-such-job") == 1
    assert "not found while trying to read RayJob no-such-job" in capsys.readouterr().err
    runner = RayJobRunner(config.new_client_from_config(config_file=kubeconfig), "recsys")
    runner.submit("prepare", REPO_MANIFESTS, suffix="same")
    with pytest.raises(RunnerError, match="conflict"):
        runner.submit("prepare", REPO_MANIFESTS, suffix="same")


def test_bad_stage_and_missing_manifests(api, kubeconfig, tmp_path, capsys):
    assert k8s(kubeconfig, "submit", "train") == 1
    assert f"unknown stage 'train'; choose one of: {', '.join(PIPELINE_STAGES)}" in capsys.readouterr().err
    assert k8s(kubeconfig, "submit", "prepare", "--manifests", str(tmp_path)) == 1
    assert "no RayJob manifest for stage 'prepare'" in capsys.readouterr().err
    assert api.rayjobs == {}


def test_invalid_rayjob_is_refused_before_it_is_sent(api, kubeconfig, tmp_path, capsys):
    from tests.k8s.conftest import REPO

    source = next((REPO / "k8s").glob("rayjob-*-prepare.yaml")).read_text()
    (tmp_path / "rayjob-x-prepare.yaml").write_text(source.replace("backoffLimit: 2", "backoffLimit: two"))
    assert k8s(kubeconfig, "submit", "prepare", "--manifests", str(tmp_path)) == 1
    assert "the RayJob is invalid: spec.backoffLimit" in capsys.readouterr().err
    assert api.rayjobs == {}
