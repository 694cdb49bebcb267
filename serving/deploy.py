"""Deploy the Serve config to a running Ray cluster, the way `serve deploy` and KubeRay's RayService do.

    python -m serving.deploy --config configs/demo.yaml [--index-version V] [--address auto]

Config deploys are declarative; Serve's code version is a hash of import path, runtime env and
args. `--index-version` goes into the deployment's user_config, so redeploying with only another
index version reconfigures the running replicas in place (load beside, check, switch) instead
of replacing them. `serve.run` from Python gives every call a new code version and rolls the
replicas; use this module (or a RayService update) to swap models.
"""

from __future__ import annotations

import argparse
import sys

from ray.serve.schema import ServeDeploySchema

from recsys.cli import config_of, config_parent
from recsys.config import ConfigError
from serving.serve_config import application, http_options


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    """Poll `url` (e.g. …/readyz) until it answers 200."""
    import time

    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f}s")


def deploy_config(config: dict, blocking: bool = True) -> None:
    """Apply a whole Serve config (every application in it; apps not in it are removed)."""
    from ray.serve.context import _get_global_client

    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config), _blocking=blocking)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.deploy", description=__doc__.splitlines()[0],
                                     parents=[config_parent()])
    parser.add_argument("--index-version", default=None, help="a published index version; default: the latest")
    parser.add_argument("--address", default="auto")
    args = parser.parse_args(argv)
    import ray
    from ray import serve

    try:
        cfg = config_of(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ray.init(address=args.address)
    config = {"http_options": http_options(cfg.serve),
              "applications": [application(cfg, args.config, index_version=args.index_version, overrides=args.overrides)]}
    serve.start(http_options=config["http_options"])
    deploy_config(config)
    print(f"deployed {config['applications'][0]['name']} (index version: {args.index_version or 'latest'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
