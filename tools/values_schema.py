"""Generate helm/recsys-platform/values.schema.json.

The chart's own keys are described here; the `config` key's schema is generated from the typed
config (recsys.config.RecsysConfig), so a values file with a mistyped config key fails
`helm install` exactly as `recsys` itself would. Every object rejects unknown keys.

    python tools/values_schema.py          # write
    python tools/values_schema.py --check  # exit 1 when the committed file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recsys.config import RecsysConfig
from recsys.entrypoints import PIPELINE_STAGES
from recsys.generated_files import write_or_check

OUT = Path(__file__).resolve().parents[1] / "helm" / "recsys-platform" / "values.schema.json"


def obj(properties: dict, required: list[str] | None = None) -> dict:
    out = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        out["required"] = required
    return out


STR = {"type": "string"}
BOOL = {"type": "boolean"}
INT0 = {"type": "integer", "minimum": 0}
QUANTITY = {"type": ["string", "integer", "number"], "pattern": r"^[0-9.]+([eE][0-9]+)?(m|[KMGTPE]i?)?$"}
RESOURCES = obj(
    {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
    }
)
MAP = {"type": "object"}
LIST = {"type": "array"}
NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 40}


def worker_group() -> dict:
    return obj(
        {
            "enabled": BOOL, "gpu": BOOL, "replicas": INT0, "minReplicas": INT0, "maxReplicas": INT0,
            "resources": RESOURCES, "tmpSize": QUANTITY, "nodeSelector": MAP, "tolerations": LIST,
        },
        required=["replicas", "minReplicas", "maxReplicas", "resources"],
    )


def chart_schema() -> dict:
    config = RecsysConfig.model_json_schema()
    defs = config.pop("$defs", {})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "recsys-platform values",
        **obj(
            {
                "nameOverride": STR,
                "fullnameOverride": {"anyOf": [{"const": ""}, NAME]},
                "image": obj({"repository": STR, "tag": STR, "gpuTag": STR,
                              "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}),
                "imagePullSecrets": {"type": "array", "items": obj({"name": STR}, ["name"])},
                "config": config,
                "rayCluster": obj({
                    "enabled": BOOL, "rayVersion": STR, "enableInTreeAutoscaling": BOOL, "idleTimeoutSeconds": INT0,
                    "head": obj({"resources": RESOURCES, "numCpus": {"type": "string", "pattern": r"^[0-9]+$"},
                                 "tmpSize": QUANTITY, "nodeSelector": MAP, "tolerations": LIST}),
                    "workerGroups": {"type": "object", "propertyNames": {"pattern": r"^[a-z0-9-]{1,30}$"},
                                     "additionalProperties": worker_group()},
                }),
                "jobs": obj({
                    "enabled": BOOL, "useCluster": BOOL,
                    "stages": {"type": "array", "uniqueItems": True,
                               "items": {"enum": list(PIPELINE_STAGES)}},
                    "activeDeadlineSeconds": {"type": "integer", "minimum": 1}, "backoffLimit": INT0,
                    "shutdownAfterJobFinishes": BOOL, "ttlSecondsAfterFinished": INT0,
                }),
                "rayService": obj({
                    "enabled": BOOL,
                    "indexVersion": {"type": "string", "pattern": "^([A-Za-z0-9][A-Za-z0-9_.-]*)?$"},
                    "workers": obj({"replicas": INT0, "minReplicas": INT0, "maxReplicas": INT0, "resources": RESOURCES}),
                    "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                }),
                "storage": obj({
                    "mode": {"enum": ["pvc", "objectStore"]},
                    "pvc": obj({"create": BOOL, "existingClaim": STR, "size": QUANTITY, "storageClassName": STR,
                                "accessModes": {"type": "array", "items": {"enum": ["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod", "ReadOnlyMany"]}}}),
                    "objectStore": obj({"uri": {"type": "string", "pattern": r"^$|^[a-z0-9]+://"}, "secretName": STR,
                                        "secretKeys": {"type": "object", "additionalProperties": STR}}),
                }),
                "security": obj({
                    "rayTokenAuth": BOOL, "networkPolicy": BOOL, "operatorNamespace": STR, "servePeers": MAP,
                    "serviceAccount": obj({"create": BOOL, "name": STR}),
                    "serveAuth": obj({"secretName": STR, "keys": obj({"read": STR, "write": STR, "admin": STR}, ["read", "write", "admin"])}),
                }),
                "monitoring": obj({"podMonitor": BOOL, "interval": {"type": "string", "pattern": r"^[0-9]+[smh]$"},
                                   "labels": {"type": "object", "additionalProperties": STR}, "grafanaDashboard": BOOL}),
            }
        ),
        "$defs": defs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="generate the chart's values.schema.json")
    parser.add_argument("--check", action="store_true", help="fail when the committed file is stale")
    text = json.dumps(chart_schema(), indent=2, sort_keys=False) + "\n"
    return write_or_check(OUT, text, parser.parse_args().check, "chart-schema")


if __name__ == "__main__":
    sys.exit(main())
