# syntax=docker/dockerfile:1
# recsys-platform image for KubeRay (head, workers, job drivers and Serve replicas).
#   CPU: docker build -t recsys-platform:0.1.0 .
#   GPU: docker build --build-arg VARIANT=gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#          -t recsys-platform:0.1.0-gpu .
# Not built in CI: the development machine has no container engine (see docs/kubernetes.md).
ARG RAY_VERSION=2.60.0
ARG VARIANT=cpu
FROM rayproject/ray:${RAY_VERSION}-py311-${VARIANT}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# HAProxy: Ray Serve's HAProxy ingress (config.serve.ingress: haproxy, the default).
USER root
RUN apt-get update && apt-get install -y --no-install-recommends haproxy && rm -rf /var/lib/apt/lists/*
USER ray
WORKDIR /app
# Dependencies first (cached layer), then the code. torch is pinned to the project's version.
COPY --chown=ray:users pyproject.toml README.md ./
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} torch==2.13.0
COPY --chown=ray:users recsys ./recsys
COPY --chown=ray:users serving ./serving
COPY --chown=ray:users ray_jobs ./ray_jobs
COPY --chown=ray:users configs ./configs
RUN pip install --no-cache-dir -e . \
 && python -c "import recsys, serving.app; print('recsys-platform', recsys.__version__)"
# The chart runs with a read-only root filesystem: caches go to the /tmp emptyDir.
ENV HOME=/tmp/home XDG_CACHE_HOME=/tmp/home/.cache TORCH_EXTENSIONS_DIR=/tmp/home/.cache/torch_extensions \
    OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
USER 1000
