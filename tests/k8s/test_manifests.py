"""k8s/: generated from the chart, current, and every manifest valid."""

import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from recsys.k8s.crd_validation import crd_dir, validate_ray_object
from tests.k8s.conftest import REPO

pytestmark = pytest.mark.k8s
MANIFESTS = sorted(p for p in (REPO / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")


def test_manifests_are_current(helm):
    done = subprocess.run([sys.executable, str(REPO / "tools" / "render_manifests.py"), "--check", "--helm", helm],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((REPO / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in MANIFESTS}
    assert {"RayCluster", "RayJob", "RayService", "NetworkPolicy", "ConfigMap"} <= kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_manifest_validates(path):
    obj = yaml.safe_load(path.read_text())
    if obj["apiVersion"] == "ray.io/v1":
        if not crd_dir().is_dir():
            pytest.skip(f"KubeRay CRDs not found at {crd_dir()}")
        assert validate_ray_object(obj) == []
    else:
        kubernetes_validate.validate(obj, "1.35.0", strict=True)
