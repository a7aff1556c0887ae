# SoundMind on Kubernetes. `make demo` and `make test` install everything they need on first use
# (Python environment, Debian packages, Go-built cluster binaries), cached outside the repository.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Evaluated once, on first use, so targets that need no Python never build the environment.
PY = $(eval PY := $(shell hack/venv.sh)/bin/python)$(PY)

.PHONY: help demo test unit integration lint deps tools images images-all cluster-up cluster-down bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

deps: ## Debian packages the tests and demo use (espeak-ng, sox, prometheus, the real node's containerd...)
	@hack/apt.sh

tools: deps ## build the cluster binaries from the Go module proxy (cached; pause needs gcc)
	@hack/tools.sh >/dev/null

demo: deps tools ## the main job on the embedded local cluster
	@hack/demo.sh "$(PY)"

unit: deps ## unit tests (no cluster)
	$(PY) -m pytest tests/unit

integration: deps tools ## integration tests against the local control plane (or SOUNDMIND_TEST_KUBECONFIG)
	$(PY) -m pytest tests/integration

test: deps tools lint ## lint, then all tests: unit and integration
	$(PY) -m pytest tests

bench: tools ## the operator against the API server's floor (BENCH_ARGS=...), then the reward; figures in benchmarks/README.md
	$(PY) benchmarks/operator_bench.py $(BENCH_ARGS)
	$(PY) benchmarks/reward_bench.py

lint: ## ruff, hadolint
	$(PY) -m ruff check soundmind operator tests hack benchmarks
	$(PY) -m ruff format --check soundmind operator tests hack benchmarks
	$(dir $(PY))hadolint images/*/Dockerfile

images: ## the operator and vLLM stand-in images, built offline (root: debootstrap, dockerd); prints their tarballs
	@$(PY) -m hack.images operator standin

images-all: ## the trainer and server images too (CUDA wheels: several GB)
	@$(PY) -m hack.images operator standin trainer server

cluster-up: tools ## start (or reuse) the local cluster; last two lines are exports for eval
	@hack/cluster.sh up

cluster-down: ## stop the local cluster
	@hack/cluster.sh down
