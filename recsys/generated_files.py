"""Files generated from the typed config (Serve config, chart schema): write them, or check them in CI."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(path: Path, text: str, check: bool, make_target: str) -> int:
    """Write `text` to `path`; with `check`, only compare and return 1 (with the fix) when stale."""
    if not check:
        path.write_text(text)
        return 0
    if path.is_file() and path.read_text() == text:
        return 0
    print(f"{path} is stale: run `make {make_target}`", file=sys.stderr)
    return 1
