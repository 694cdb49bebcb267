"""Validate ray.io/v1 objects against the KubeRay CRDs' schemas, as the API server would.

The CRDs' `openAPIV3Schema` is converted to JSON Schema with the API server's semantics:
- a field that has a `default` is not required (the server fills defaults before validating);
- `null` values are pruned before validation;
- unknown fields are rejected (strict field validation) unless the schema preserves them;
- `x-kubernetes-int-or-string` accepts an integer or a string.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import jsonschema
import yaml

DEFAULT_CRD_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "kuberay" / "crds"
_KEYWORDS = ("type", "enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "format")


class CRDNotFoundError(FileNotFoundError):
    pass


def to_json_schema(node: dict) -> dict:
    out: dict = {k: node[k] for k in _KEYWORDS if k in node and k != "format"}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    if "properties" in node:
        out["properties"] = {name: to_json_schema(sub) for name, sub in node["properties"].items()}
        required = [r for r in node.get("required", []) if "default" not in node["properties"].get(r, {})]
        if required:
            out["required"] = required
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    elif isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    return out


def crd_dir() -> Path:
    return Path(os.environ.get("RECSYS_KUBERAY_CRDS", DEFAULT_CRD_DIR))


@cache
def kind_schemas(directory: str | None = None) -> dict[str, dict]:
    """kind → JSON Schema of its `v1` version, for every CRD file in the folder."""
    folder = Path(directory) if directory else crd_dir()
    if not folder.is_dir():
        raise CRDNotFoundError(f"KubeRay CRDs not found at {folder}; set RECSYS_KUBERAY_CRDS to the crds folder")
    schemas = {}
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            for version in doc["spec"]["versions"]:
                if version["name"] == "v1":
                    schemas[doc["spec"]["names"]["kind"]] = to_json_schema(version["schema"]["openAPIV3Schema"])
    return schemas


def prune_nulls(value):
    if isinstance(value, dict):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    return value


def validate_ray_object(obj: dict, directory: str | None = None) -> list[str]:
    """Problems with a ray.io/v1 object, each as `path: message` (empty when valid)."""
    if obj.get("apiVersion") != "ray.io/v1":
        return [f"apiVersion: expected ray.io/v1, got {obj.get('apiVersion')!r}"]
    schemas = kind_schemas(directory)
    kind = obj.get("kind")
    if kind not in schemas:
        return [f"kind: {kind!r} is not a KubeRay kind ({', '.join(sorted(schemas))})"]
    validator = jsonschema.Draft202012Validator(schemas[kind])
    errors = sorted(validator.iter_errors(prune_nulls(obj)), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]
