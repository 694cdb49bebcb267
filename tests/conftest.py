from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BEAUTY_DIR = REPO.parent / "shared" / "datasets" / "amazon-beauty"


@pytest.fixture(scope="session")
def beauty_dir() -> Path:
    if not (BEAUTY_DIR / "Beauty.txt").is_file():
        pytest.skip(f"Amazon Beauty not found at {BEAUTY_DIR} (../shared/datasets is absent on this machine)")
    return BEAUTY_DIR


@pytest.fixture
def shared_datasets() -> Path:
    root = REPO.parent / "shared" / "datasets"
    if not (root / "ml-100k" / "ml-100k.inter").is_file() or not (root / "amazon-beauty" / "Beauty.txt").is_file():
        pytest.skip(f"real datasets not found under {root} (../shared/datasets is absent on this machine)")
    return root


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port for the session (skips when not installed)."""
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; `make system-deps` / .ci/run install it)")
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "", "--appendonly", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis(port=port).ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)
