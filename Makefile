# recsys-platform — `make demo` and `make test` work as the first command on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# One test session = one local Ray; never join a cluster someone left running.
export RAY_ADDRESS :=

.DEFAULT_GOAL := help
HELM := $(BIN)/helm
CHART := helm/recsys-platform
.PHONY: help install demo test test-all lint bench clean chart-schema helm-bin manifests serve-config system-deps
BENCHMARKS := data_pipeline train_throughput quality_beauty serving search

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11+ or run make PYTHON=python3.12 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned resolve pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP) ## create .venv and install the package (editable) with dev extras

system-deps: ## haproxy + redis-server from apt when missing and possible (else a note: fallbacks apply)
	@tools/system_deps.sh

demo: $(STAMP) system-deps ## run the whole path locally: data → pretrain → finetune → eval → index → live /recommend
	$(BIN)/recsys demo --config configs/demo.yaml

$(HELM): $(STAMP)
	$(BIN)/python tools/fetch_helm.py

helm-bin: $(HELM) ## install the pinned helm and kubectl binaries into .venv/bin

manifests: $(HELM) ## regenerate k8s/ from the Helm chart
	$(BIN)/python tools/render_manifests.py

serve-config: $(STAMP) ## regenerate serving/serve-config.yaml from configs/demo.yaml
	$(BIN)/python -m serving.serve_config

chart-schema: $(STAMP) ## regenerate the chart's values.schema.json from the typed config
	$(BIN)/python tools/values_schema.py

test: $(STAMP) $(HELM) system-deps ## fast suite (unit + integration without the slow marker); CI runs this
	$(BIN)/python -m pytest -m "not slow" -q

test-all: $(STAMP) $(HELM) system-deps ## everything, including slow end-to-end checks on ../shared/datasets
	$(BIN)/python -m pytest -q

lint: $(STAMP) ## ruff
	$(BIN)/ruff check recsys serving ray_jobs tests tools

bench: $(STAMP) system-deps ## benchmarks (print figures, write benchmarks/results/*.json)
	for b in $(BENCHMARKS); do $(BIN)/python -m benchmarks.$$b || exit 1; done

clean: ## remove artifacts and caches (keeps .venv)
	rm -rf artifacts .pytest_cache .ruff_cache
