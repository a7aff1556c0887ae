# SoundMind on Kubernetes. `make demo` and `make test` install everything they need on first use
# (Python environment, Debian packages, Go-built cluster binaries), cached outside the repository.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Evaluated once, on first use, so targets that need no Python never build the environment.
PY = $(eval PY := $(shell hack/venv.sh)/bin/python)$(PY)

.PHONY: help demo test unit integration lint deps tools cluster-up cluster-down bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

deps: ## Debian packages the tests and demo use (espeak-ng, sox, prometheus)
	@hack/apt.sh

tools: ## build the cluster binaries from the Go module proxy (cached)
	@hack/tools.sh >/dev/null

demo: deps tools ## the main job on the embedded local cluster
	@hack/demo.sh "$(PY)"

unit: deps ## unit tests (no cluster)
	$(PY) -m pytest tests/unit

integration: deps tools ## integration tests against the local control plane (or SOUNDMIND_TEST_KUBECONFIG)
	$(PY) -m pytest tests/integration

test: deps tools lint ## lint, then all tests: unit and integration
	$(PY) -m pytest tests

bench: deps tools ## the operator against the API server's floor (BENCH_ARGS=...), the reward, data preparation; figures in benchmarks/README.md
	$(PY) benchmarks/operator_bench.py $(BENCH_ARGS)
	$(PY) benchmarks/reward_bench.py
	$(PY) benchmarks/data_bench.py

lint: ## ruff
	$(PY) -m ruff check soundmind operator tests hack benchmarks
	$(PY) -m ruff format --check soundmind operator tests hack benchmarks

cluster-up: tools ## start (or reuse) the local cluster; last two lines are exports for eval
	@hack/cluster.sh up

cluster-down: ## stop the local cluster
	@hack/cluster.sh down
