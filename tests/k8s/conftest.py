"""Chart tests: a real helm binary (installed by tools/fetch_helm.py), no cluster."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "recsys-platform"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))


def _binary(name: str) -> str:
    local = Path(sys.executable).parent / name
    if not local.is_file():
        subprocess.run([sys.executable, str(REPO / "tools" / "fetch_helm.py")], check=True)
    found = str(local) if local.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed and tools/fetch_helm.py could not install it")
    return found


@pytest.fixture(scope="session")
def helm() -> str:
    """Helm 4 (the default binary)."""
    return _binary("helm")


@pytest.fixture(scope="session")
def helm3() -> str:
    return _binary("helm3")


def render(helm: str, *args: str) -> list[dict]:
    done = subprocess.run([helm, "template", "rs", str(CHART), "--namespace", "recsys", *args],
                          capture_output=True, text=True)
    if done.returncode:
        raise RenderError(done.stderr)
    return [d for d in yaml.safe_load_all(done.stdout) if d]


class RenderError(Exception):
    pass
