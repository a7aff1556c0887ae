#!/usr/bin/env bash
# `make test-kind`: the integration suite against a kind cluster (Kubernetes in Docker), the cluster
# CI users run it on. The same steps as `make test`'s local tier: the images built the same way
# (on the public python:3.11-slim-bookworm, as SOUNDMIND_IMAGE_BASE, rather than a debootstrapped
# base: a registry is at hand wherever Docker is), loaded into the cluster's node, the suite run.
#
# Needs Docker (a running engine this user may use) and Go; kind is built from the Go module proxy
# at the version below. The cluster is named soundmind-test, reused when it exists and deleted at the
# end unless KEEP_CLUSTER=1. Arguments go to pytest: hack/test-kind.sh -k charts
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SOUNDMIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/soundmind}
bin="$cache/bin" # hack/tools.sh's: <tool>-<version>, and current/ for PATH
CLUSTER=soundmind-test
KIND_VERSION=v0.32.0
# kind v0.32.0's own default node image (its pkg/apis/config/defaults/image.go), by tag and digest:
# Kubernetes v1.36.1. The suite needs v1.33 or newer (Job successPolicy and podFailurePolicy).
KIND_NODE_IMAGE=kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5

die() { echo "test-kind.sh: $*" >&2; exit 1; }

# What is missing is said before anything is built: a cold build takes tens of minutes.
command -v docker >/dev/null || die "Docker is required: no docker command on PATH (https://docs.docker.com/engine/install/)"
if ! problem=$(docker version --format '{{.Server.Version}}' 2>&1 >/dev/null); then
  die "the Docker engine does not answer; is it running, and may $(id -un) use it? docker says: $problem"
fi
command -v go >/dev/null || die "Go (1.26 or newer) is required: kind and the cluster binaries are built from the Go module proxy"
# kind talks to the engine of the docker command's context; the image builds (hack/images) to
# DOCKER_HOST's or the system socket's. Point both at the same one.
DOCKER_HOST=${DOCKER_HOST:-$(docker context inspect --format '{{.Endpoints.docker.Host}}')}
export DOCKER_HOST
export SOUNDMIND_IMAGE_BASE=${SOUNDMIND_IMAGE_BASE:-python:3.11-slim-bookworm}

kind="$bin/kind-$KIND_VERSION"
if [ ! -x "$kind" ]; then
  echo "building kind $KIND_VERSION from the Go module proxy..." >&2
  mkdir -p "$bin/current"
  gobin=$(mktemp -d)
  GOBIN="$gobin" CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kind@$KIND_VERSION"
  mv -f "$gobin/kind" "$kind"
  rm -rf "$gobin"
fi
ln -sfn "../kind-$KIND_VERSION" "$bin/current/kind"

# Debian packages, then the cluster binaries, the Python environment and the images side by side,
# as `make integration` prepares them; then the tarballs' paths (the images are current: a second).
make=(make -C "$root" --no-print-directory)
"${make[@]}" setup-integration
listed=$("${make[@]}" -s images)
mapfile -t tarballs <<<"$listed"
bin_dir=$("$root/hack/tools.sh" | tail -1)
python="$("$root/hack/venv.sh")/bin/python"

work=$(mktemp -d)
finish() {
  rm -rf "$work"
  if [ "${KEEP_CLUSTER:-}" = 1 ]; then
    echo "kept the kind cluster $CLUSTER (kind get kubeconfig --name $CLUSTER; kind delete cluster --name $CLUSTER)" >&2
  else
    "$kind" delete cluster --name "$CLUSTER"
  fi
}
trap finish EXIT
if "$kind" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "reusing the kind cluster $CLUSTER" >&2
else
  "$kind" create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --wait 120s
fi
kubeconfig="$work/kubeconfig"
"$kind" get kubeconfig --name "$CLUSTER" >"$kubeconfig"
for tarball in "${tarballs[@]}"; do
  "$kind" load image-archive "$tarball" --name "$CLUSTER"
done
# The CRDs as a user installs them. --take-ownership: a kept cluster's CRDs may carry the release of
# the chart test (tests/integration/test_charts.py adopts them, and they outlive its uninstall).
"$bin_dir/helm" upgrade --install soundmind-crds "$root/charts/soundmind-crds" --kubeconfig "$kubeconfig" \
  --namespace default --take-ownership --wait --timeout 2m

cd "$root"
SOUNDMIND_TEST_KUBECONFIG="$kubeconfig" "$python" -m pytest tests/integration "$@"
