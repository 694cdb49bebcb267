"""A stage submitted with `ray job submit` to a real `ray start --head` cluster succeeds."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def head_node():
    """`ray start --head --block` in its own temp dir; terminating it stops that cluster only
    (`ray stop` would also kill the session's other Ray)."""
    bin_dir = Path(sys.executable).parent
    temp_dir = tempfile.mkdtemp(prefix="rj-")  # short: Ray's socket paths must stay < 108 bytes
    dashboard = free_port()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={free_port()}", "--num-cpus=2",
         "--include-dashboard=true", f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}",
         f"--temp-dir={temp_dir}", "--disable-usage-stats",
         # Own agent ports: the session's Ray (other integration tests) holds the defaults, and an agent
         # that cannot bind leaves the head without a job agent ("No available agent to submit job").
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(address + "/api/version", timeout=2).status_code in (200, 401, 403):
                break
        except requests.RequestException:
            time.sleep(1)
    if proc.poll() is not None:
        pytest.fail(f"ray start --head exited: {proc.stdout.read()}")
    yield address, env, temp_dir
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_prepare_stage_via_ray_job_submit(head_node, tmp_path):
    address, env, temp_dir = head_node
    root = tmp_path / "artifacts"
    cmd = [
        str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
        "--", "python", "ray_jobs/prepare_data.py", "--config", "configs/demo.yaml",
        "--set", "data.source=synthetic", "--set", f"artifacts.root={root}",
        "--set", "data.synthetic.num_users=200", "--set", "data.synthetic.num_items=50",
    ]
    deadline = time.monotonic() + 120
    while True:
        done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        out = done.stdout + done.stderr
        # The dashboard answers before the node's job agent registers; on a busy machine that takes a while.
        if "No available agent" not in out or time.monotonic() > deadline:
            break
        time.sleep(3)
    if done.returncode != 0:
        agent_logs = sorted(Path(temp_dir).rglob("dashboard_agent*.log"))
        tail = agent_logs[-1].read_text()[-3000:] if agent_logs else "no dashboard_agent log"
        pytest.fail(f"ray job submit failed:\n{out}\n--- dashboard agent log tail ---\n{tail}")
    assert "succeeded" in out, out
    manifest = json.loads(next(root.glob("datasets/synthetic/*/manifest.json")).read_text())
    assert manifest["counts"]["users"] == 200
    assert (root / "datasets" / "synthetic" / "LATEST").read_text() == manifest["version"]
