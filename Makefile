# SoundMind on Kubernetes. `make demo` and `make test` install everything they need on first use
# (Python environment, Debian packages, Go-built cluster binaries, images), cached outside the repository.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Evaluated once, on first use, so targets that need no Python never build the environment. A recipe
# that builds it this way holds up every other job of a parallel make (make waits for $(shell)), so
# targets that run beside others depend on `venv` first, which builds it in a recipe of its own.
PY = $(eval PY := $(shell hack/venv.sh)/bin/python)$(PY)

# make test, integration and demo (and hack/test-kind.sh) prepare what they need side by side, in a
# sub-make of setup-<target>: apt first (the Go builds need its gcc, the images its debootstrap and
# dockerd), then the Go builds, the Python environment and the images at once, each as soon as what
# it needs is there (images and lint run the environment's Python). A cold run spends most of its
# time compiling; the downloads and image builds overlap it. Each step's output is printed whole when
# it ends; a failed one stops the run once the steps already under way have ended. setup-<target> is
# a prerequisite, not a first recipe line, because make expands all of a recipe's lines before it
# runs the first: $(PY) further down would build the environment before anything else started.
PARALLEL := --no-print-directory --jobs --output-sync=target

.PHONY: help demo test test-kind test-gpu-images unit integration lint deps venv tools images images-all push release-dry-run cluster-up cluster-down bench
.PHONY: setup-test setup-demo setup-integration

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

deps: ## Debian packages the tests and demo use (espeak-ng, sox, prometheus, the real node's containerd, debootstrap...)
	@hack/apt.sh

venv: ## the cached Python environment (hack/venv.sh)
	@hack/venv.sh >/dev/null

tools: deps ## build the cluster binaries from the Go module proxy (cached; pause needs gcc; TOOLS=... builds only those)
	@hack/tools.sh $(TOOLS) >/dev/null

demo: setup-demo ## the main job on the embedded local cluster
	@hack/demo.sh "$(PY)"

setup-demo: # images: the vLLM stand-in the demo's evaluation serves on the real node
	@$(MAKE) $(PARALLEL) tools images

unit: deps ## unit tests (no cluster)
	$(PY) -m pytest tests/unit

integration: setup-integration ## integration tests against the local control plane (or SOUNDMIND_TEST_KUBECONFIG)
	$(PY) -m pytest tests/integration

setup-integration:
	@$(MAKE) $(PARALLEL) tools images

test: setup-test ## lint, then all tests: the integration and unit tests side by side (hack/test.sh)
	@hack/test.sh "$(PY)"

setup-test: # the tools the tests need first; hack/test.sh builds the `later` ones beside them
	@$(MAKE) $(PARALLEL) tools images lint TOOLS=first

test-gpu-images: deps venv ## build the trainer and server images, then check them inside, on CPU (cold: an hour; not in make test)
	$(PY) -m pytest tests/gpu_images

test-kind: ## the integration tests on a kind cluster (needs Docker; KEEP_CLUSTER=1 keeps the cluster)
	@hack/test-kind.sh

bench: deps tools ## the operator against the API server's floor (BENCH_ARGS=...), the reward, data preparation; figures in benchmarks/README.md
	@failed=""; \
	$(PY) benchmarks/operator_bench.py $(BENCH_ARGS) || failed="$$failed operator_bench"; \
	$(PY) benchmarks/reward_bench.py || failed="$$failed reward_bench"; \
	$(PY) benchmarks/data_bench.py || failed="$$failed data_bench"; \
	if [ -n "$$failed" ]; then echo "bench: missed a target or failed:$$failed" >&2; exit 1; fi

lint: venv ## ruff, hadolint
	$(PY) -m ruff check soundmind operator tests hack benchmarks
	$(PY) -m ruff format --check soundmind operator tests hack benchmarks
	$(dir $(PY))hadolint images/*/Dockerfile

images: deps venv ## the operator and vLLM stand-in images, built offline (root: debootstrap, dockerd); prints their tarballs
	@$(PY) -m hack.images operator standin

images-all: deps venv ## the trainer and server images too (CUDA wheels: several GB)
	@$(PY) -m hack.images operator standin trainer server

push: images ## push the built images to REGISTRY=host[:port][/path] with skopeo (skopeo login first); prints them by digest
	@[ -n "$(REGISTRY)" ] || { echo "make push: set REGISTRY=host[:port][/path], e.g. make push REGISTRY=registry.example:5000/team" >&2; exit 1; }
	@$(PY) -m hack.push "$(REGISTRY)"

# The release workflow's steps (hack/release.py) against REGISTRY with a local key, made on first use
# (COSIGN_KEY, default .build/release/cosign.key; COSIGN_PASSWORD protects it); REGISTRY_CA: its CA, if
# this machine does not trust it. Log in first, once for skopeo, cosign and helm: `skopeo login
# --authfile ~/.docker/config.json REGISTRY`. Images `make images` did not build are skipped, saying so.
release-dry-run: images ## push, SBOM-attest and sign the built images and both charts in REGISTRY=host[:port][/path]
	@[ -n "$(REGISTRY)" ] || { echo "make release-dry-run: set REGISTRY=host[:port][/path]" >&2; exit 1; }
	@hack/tools.sh helm cosign syft >/dev/null
	@COSIGN_PASSWORD="$${COSIGN_PASSWORD-}" $(PY) -m hack.release "$(REGISTRY)" --key "$(or $(COSIGN_KEY),.build/release/cosign.key)" \
	  $(if $(REGISTRY_CA),--ca-file "$(REGISTRY_CA)") --notes .build/release/notes.md

cluster-up: tools ## start (or reuse) the local cluster; last two lines are exports for eval
	@hack/cluster.sh up

cluster-down: ## stop the local cluster
	@hack/cluster.sh down
