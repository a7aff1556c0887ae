#!/usr/bin/env bash
# `make test-kind`: the integration suite against a kind cluster (Kubernetes in Docker), the cluster
# CI users run it on. The same steps as `make test`'s local tier: the images built the same way,
# loaded into the cluster's node, the suite run.
#
# Needs Go (kind is built from the Go module proxy at hack/tools.sh's pin) and Docker. Two ways:
#   * a registry at hand: kind's own default node image (pinned by digest in kind's source: v0.33.0's
#     is Kubernetes v1.37.0) and the images built on the public python:3.11-slim-bookworm
#     (SOUNDMIND_IMAGE_BASE), in the engine the docker command uses;
#   * no registry (or SOUNDMIND_KIND_NODE_IMAGE=local): a node image assembled offline from this
#     machine's parts (hack/kind_node.py: debootstrapped bookworm, Debian's containerd, the Kubernetes
#     binaries hack/tools.sh builds, kubeadm included) and its cluster config (no kindnetd, no
#     CoreDNS), the images on the debootstrapped base as `make test` builds them. Where no Docker
#     engine answers, root gets a private dockerd for kind (state under the cache, stopped by pid
#     at the end). SOUNDMIND_KIND_NODE_IMAGE=upstream forces the first way.
# The cluster is named soundmind-test, reused when it exists and deleted at the end unless
# KEEP_CLUSTER=1. Arguments go to pytest: hack/test-kind.sh -k charts
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SOUNDMIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/soundmind}
bin="$cache/bin" # hack/tools.sh's: <tool>-<version>, and current/ for PATH
CLUSTER=soundmind-test

die() { echo "test-kind.sh: $*" >&2; exit 1; }

# upstream or local (above); unset, local where Docker Hub does not answer within 5 s.
node_image=${SOUNDMIND_KIND_NODE_IMAGE:-}
if [ -z "$node_image" ]; then
  if timeout 5 bash -c '</dev/tcp/registry-1.docker.io/443' 2>/dev/null; then node_image=upstream; else node_image=local; fi
  echo "test-kind.sh: node image: $node_image (SOUNDMIND_KIND_NODE_IMAGE=upstream|local to choose)" >&2
fi
case $node_image in upstream | local) ;; *) die "SOUNDMIND_KIND_NODE_IMAGE is upstream or local, not '$node_image'" ;; esac

# What is missing is said before anything is built: a cold build takes tens of minutes.
command -v go >/dev/null || die "Go (1.26 or newer) is required: kind and the cluster binaries are built from the Go module proxy"
command -v docker >/dev/null || die "Docker is required: no docker command on PATH (https://docs.docker.com/engine/install/)"
kind="$bin/current/kind"
own_dockerd="" # pid of hack/kind_node.py --serve-dockerd, when this script started one
work=$(mktemp -d)
finish() {
  if [ "${KEEP_CLUSTER:-}" = 1 ]; then
    echo "kept the kind cluster $CLUSTER (kind get kubeconfig --name $CLUSTER; kind delete cluster --name $CLUSTER)" >&2
    [ -z "$own_dockerd" ] || echo "and its dockerd: DOCKER_HOST=$DOCKER_HOST; stop it with kill $own_dockerd" >&2
  else
    [ ! -x "$kind" ] || "$kind" delete cluster --name "$CLUSTER" || true
    if [ -n "$own_dockerd" ]; then
      # kind leaves its network behind; then the daemon goes (its supervisor stops it by pid).
      docker network rm kind >/dev/null 2>&1 || true
      kill "$own_dockerd" 2>/dev/null || true
      wait "$own_dockerd" || true
    fi
  fi
  rm -rf "$work"
}
trap finish EXIT
if [ -z "${DOCKER_HOST:-}" ] && ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1 &&
  [ "$node_image" = local ] && [ "$(id -u)" = 0 ] && [ -x /usr/sbin/dockerd ]; then
  # No engine answers: a private one, with the networking kind needs (hack/kind_node.py KindDockerd).
  python3 "$root/hack/kind_node.py" --serve-dockerd "$cache/kind/docker" >"$work/docker-host" &
  own_dockerd=$!
  until [ -s "$work/docker-host" ]; do
    kill -0 "$own_dockerd" 2>/dev/null || { wait "$own_dockerd" || true; die "the private dockerd for kind did not start (above)"; }
    sleep 0.2
  done
  DOCKER_HOST=$(cat "$work/docker-host")
  export DOCKER_HOST
  echo "test-kind.sh: started a private dockerd for kind ($DOCKER_HOST)" >&2
fi
if ! problem=$(docker version --format '{{.Server.Version}}' 2>&1 >/dev/null); then
  die "the Docker engine does not answer; is it running, and may $(id -un) use it? docker says: $problem"
fi
# kind talks to the engine of the docker command's context; the image builds (hack/images) to
# DOCKER_HOST's or the system socket's. Point both at the same one.
DOCKER_HOST=${DOCKER_HOST:-$(docker context inspect --format '{{.Endpoints.docker.Host}}')}
export DOCKER_HOST
if [ "$node_image" = upstream ]; then
  export SOUNDMIND_IMAGE_BASE=${SOUNDMIND_IMAGE_BASE:-python:3.11-slim-bookworm}
fi

# Debian packages, then the cluster binaries, the Python environment and the images side by side,
# as `make integration` prepares them; then the tarballs' paths (the images are current: a second).
# Each step's time goes to stderr as it ends, and all of them again at the end.
began=$SECONDS
timings=()
took() { timings+=("$1 $((SECONDS - began)) s"); echo "test-kind.sh: $1 in $((SECONDS - began)) s" >&2; began=$SECONDS; }
make=(make -C "$root" --no-print-directory)
"${make[@]}" setup-integration
listed=$("${make[@]}" -s images)
mapfile -t tarballs <<<"$listed"
bin_dir=$("$root/hack/tools.sh" | tail -1)
"$root/hack/tools.sh" kind >/dev/null
python="$("$root/hack/venv.sh")/bin/python"
took "prepared (tools, Python environment, images)"

"$python" "$root/hack/kind_node.py" --config "$node_image" >"$work/kind.yaml"
node=() # kind's own default image, pinned by digest in its source
if [ "$node_image" = local ]; then
  "$root/hack/tools.sh" kubeadm >/dev/null
  k8s_version=$(cd "$root/hack/tools/k8s" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
  node=(--image "$("$python" "$root/hack/kind_node.py" --bin-dir "$bin_dir" --kubernetes-version "$k8s_version")")
  took "node image (kubeadm and the offline image)"
fi

if "$kind" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "reusing the kind cluster $CLUSTER" >&2
else
  "$kind" create cluster --name "$CLUSTER" "${node[@]}" --config "$work/kind.yaml" --wait 120s
  took "cluster created, its node Ready"
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
took "images loaded and CRDs installed"

cd "$root"
status=0
SOUNDMIND_TEST_KUBECONFIG="$kubeconfig" "$python" -m pytest tests/integration "$@" || status=$?
took "integration suite (pytest exit status $status)"
printf 'test-kind.sh: %s\n' "${timings[@]}" >&2
exit "$status"
