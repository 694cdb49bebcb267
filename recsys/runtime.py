"""Starting or joining Ray, sized by the `cluster` section."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from recsys.config import ClusterConfig, ConfigError, ServeConfig

# DeepSpeed JIT-builds its CPU ops (~50 s) on first use; a stable folder makes that a one-off.
DEFAULT_EXTENSIONS_DIR = Path.home() / ".cache" / "recsys-platform" / "torch_extensions"


def serve_env(serve: ServeConfig) -> dict[str, str]:
    """Environment a Ray cluster needs for `serve.ingress`; it must be set before Ray starts
    (Serve reads it in every process). The Helm chart sets the same variables on its pods."""
    if serve.ingress == "proxy":
        return {}
    if shutil.which(os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH", "haproxy")) is None:
        raise ConfigError(
            "serve.ingress: haproxy needs the haproxy binary on PATH (apt-get install haproxy), "
            "or set serve.ingress: proxy to use Serve's Python proxy"
        )
    # Throughput-optimised Serve: replicas serve HTTP themselves (direct ingress), HAProxy in front.
    return {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}


def init_ray(cluster: ClusterConfig, quiet: bool = True, serve: ServeConfig | None = None):
    """Join the cluster at `address` (or RAY_ADDRESS under `ray job submit`), else start a local Ray.

    With `serve`, a local Ray is started with the environment its Serve ingress needs."""
    import ray

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(DEFAULT_EXTENSIONS_DIR))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if serve is not None and not ray.is_initialized() and not (cluster.address or os.environ.get("RAY_ADDRESS")):
        for key, value in serve_env(serve).items():
            os.environ.setdefault(key, value)
    if ray.is_initialized():
        return ray.get_runtime_context()
    address = cluster.address or os.environ.get("RAY_ADDRESS")
    kwargs = {"log_to_driver": not quiet, "logging_level": logging.WARNING if quiet else logging.INFO}
    if address:
        # Under `ray job submit` the job's runtime_env (working_dir, env vars) already applies.
        return ray.init(address=address, **kwargs)
    return ray.init(
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": os.environ["TORCH_EXTENSIONS_DIR"]}},
        address="local",
        num_cpus=cluster.num_cpus,
        object_store_memory=cluster.object_store_memory_mb * 2**20 if cluster.object_store_memory_mb else None,
        include_dashboard=cluster.include_dashboard,
        **kwargs,
    )


def quiet_ray_data() -> None:
    """Progress bars and per-operator logs drown the demo's output on a terminal."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
