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


@pytest.fixture(scope="session")
def helm() -> str:
    local = Path(sys.executable).parent / "helm"
    if not local.is_file():
        subprocess.run([sys.executable, str(REPO / "tools" / "fetch_helm.py")], check=True)
    return str(local if local.is_file() else shutil.which("helm"))


def render(helm: str, *args: str) -> list[dict]:
    done = subprocess.run([helm, "template", "rs", str(CHART), "--namespace", "recsys", *args],
                          capture_output=True, text=True)
    if done.returncode:
        raise RenderError(done.stderr)
    return [d for d in yaml.safe_load_all(done.stdout) if d]


class RenderError(Exception):
    pass
