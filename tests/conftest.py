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
