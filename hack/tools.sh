#!/usr/bin/env bash
# Builds the local cluster's binaries from the Go module proxy, once, into a cache outside the
# repository keyed by tool and version (<cache>/bin/<tool>-<version>), and points
# <cache>/bin/current/<tool> at the versions this checkout wants. Prints how long each build took
# on stderr and the PATH-ready directory (<cache>/bin/current) on stdout, last.
#
# Versions: k8s and etcd come from the wrapper modules under hack/tools/ (go.mod + go.sum are the
# pins); kwok, helm, the registry, cosign, syft and actionlint are `go install`ed at the versions
# below (their own go.sum is checked against the Go checksum database). It also fetches the third-party CRDs the
# integration tests install (pins in hack/third-party-crds.txt) into <cache>/crds/.
#
# `hack/tools.sh TOOL...` builds only the tools named (the release workflow needs helm, cosign and
# syft, not a cluster), and fetches no CRDs unless `crds` is named. Two groups name several at once:
# `first`, what `make test` builds before its tests start, and `later`, what it builds beside them
# (hack/test.sh): the registry, cosign, syft and KEDA are more than half the cold compile, and only the
# few test modules that use them wait for them (they run last; tests/integration/conftest.py).
# Each tool is built under its own lock, so a caller waits only for the tools it asked for.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SOUNDMIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/soundmind}
bin="$cache/bin"
current="$bin/current"
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
# The CNCF distribution registry: the integration tests' image and chart registry (tests/support/registry.py).
REGISTRY_VERSION=v3.1.2
# Signing and SBOMs (hack/release.py, tests/integration/test_signing.py). cosign v3 needs Go 1.27.
COSIGN_VERSION=v2.6.5
SYFT_VERSION=v1.57.2
# The workflows' linter (tests/unit/test_workflows.py).
ACTIONLINT_VERSION=v1.7.12
# Kubernetes in Docker, for `make test-kind` (hack/test-kind.sh): its own default node image, pinned
# by digest in its source, is the one the suite runs on where a registry answers. v0.33.0's is
# Kubernetes v1.37.0, the minor the local cluster runs (tests/unit/test_kind_node.py holds that).
KIND_VERSION=v0.33.0
first="kube-apiserver kubelet kube-proxy kube-controller-manager kube-scheduler kubectl pause etcd kwok helm actionlint crds"
later="registry cosign syft keda-operator keda-adapter" # in the order the late test modules need them
# Only `make test-kind` needs kind, and without a registry kubeadm (its kind node image is assembled
# here: hack/kind_node.py). In neither group, nor in "all": they are built when named.
known=" $first $later kind kubeadm "
only=" " # the tools asked for
for tool in "$@"; do
  case $tool in
    first) only+="$first " ;;
    later) only+="$later " ;;
    *)
      [[ $known == *" $tool "* ]] || { echo "tools.sh: no tool '$tool'; there are:$known(and the groups first, later)" >&2; exit 2; }
      only+="$tool "
      ;;
  esac
done
[ $# -gt 0 ] || only+="$first $later "
wanted() { [[ $only == *" $1 "* ]]; }

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# A module that asks for a newer Go than the local one fetches that toolchain from the proxy.
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
command -v go >/dev/null || { echo "tools.sh: the Go toolchain (go >= 1.26) is required" >&2; exit 1; }

mkdir -p "$bin" "$current"

# locked <name> <command...>: runs the command holding <name>'s lock, so that two callers (make test
# and make demo in two shells, a test waiting for the build hack/test.sh started) build it once.
# Not `"$@" || ...`: that would turn errexit off inside the command, and a failed build would go on
# to "built" and a link to nothing. A failure ends the script, and the lock with it.
locked() {
  local name=$1 fd; shift
  exec {fd}>"$bin/.$name.lock"
  flock "$fd"
  "$@"
  exec {fd}>&-
}

module_version() { # <wrapper dir> <module>: the version a wrapper module pins
  (cd "$root/hack/tools/$1" && go list -m -f '{{.Version}}' "$2")
}

# build <tool> <version> <command...>: runs the command (which must write "$out") unless the
# versioned binary is already cached, then links it into current/.
build() { locked "$1" build_unlocked "$@"; }
build_unlocked() {
  local tool=$1 version=$2; shift 2
  out="$bin/$tool-$version"
  if [ ! -x "$out" ]; then
    echo "building $tool $version from the Go module proxy..." >&2
    local start=$SECONDS
    rm -f "$out.tmp"
    "$@"
    mv -f "$out.tmp" "$out"
    echo "built $tool $version in $((SECONDS - start))s" >&2
  fi
  ln -sfn "../$tool-$version" "$current/$tool"
}

go_build_in() { # <wrapper dir> <ldflags> <package>
  (cd "$root/hack/tools/$1" && go build -trimpath -ldflags "$2" -o "$out.tmp" "$3")
}

go_install() { # <ldflags> <package@version>
  local gobin
  gobin=$(mktemp -d)
  GOBIN="$gobin" go install -trimpath -ldflags "$1" "$2"
  mv -f "$gobin/$(basename "${2%@*}")" "$out.tmp"
  rm -rf "$gobin"
}

# KEDA's operator and metrics adapter (the autoscaling test runs them as local processes), at the
# version whose CRDs the tests install (hack/third-party-crds.txt: one pin for both). Its go.mod has
# replace lines, which only apply when building inside the module, so it builds from its directory.
read -r _ keda_module keda_version _ < <(grep '^keda[[:space:]]' "$root/hack/third-party-crds.txt")
keda_prefetch="" # pid of the download below, until its build has waited for it
if { wanted keda-operator || wanted keda-adapter; } &&
  { [ ! -x "$bin/keda-operator-$keda_version" ] || [ ! -x "$bin/keda-adapter-$keda_version" ]; }; then
  # Outside any module (in /); on failure -json puts the reason in the JSON on stdout.
  if ! json=$(cd / && GOFLAGS=-mod=mod go mod download -json "$keda_module@$keda_version"); then
    echo "tools.sh: go mod download $keda_module@$keda_version failed: $json" >&2
    exit 1
  fi
  keda_dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
  # Its dependencies are 1.7 GB of modules (half a minute on a fast link, more on a slow one):
  # fetched now, while the Kubernetes servers keep the CPUs busy, rather than after them. The go
  # command locks its module cache, so this and the builds below share it safely.
  keda_log=$(mktemp)
  (cd "$keda_dir" && exec go mod download) >"$keda_log" 2>&1 &
  keda_prefetch=$!
  trap 'kill "$keda_prefetch" 2>/dev/null || true; rm -f "$keda_log"' EXIT # on failure, not left running
fi

k8s=$(module_version k8s k8s.io/kubernetes) # e.g. v1.37.2
k8s_minor=$(cut -d. -f2 <<<"$k8s")
version_pkg=k8s.io/component-base/version
k8s_ldflags="-s -w -X $version_pkg.gitVersion=$k8s -X $version_pkg.gitMajor=1"
k8s_ldflags+=" -X $version_pkg.gitMinor=$k8s_minor -X $version_pkg.gitTreeState=clean"
# kube-apiserver first: it compiles most of what the others share, so they build faster after.
# kubelet and kube-proxy run the local cluster's real node (tests/support/realnode.py).
for cmd in kube-apiserver kubelet kube-proxy kube-controller-manager kube-scheduler kubectl kubeadm; do
  if wanted "$cmd"; then build "$cmd" "$k8s" go_build_in k8s "$k8s_ldflags" "k8s.io/kubernetes/cmd/$cmd"; fi
done

# The real node's sandbox ("pause") image has no registry to come from: its program is built here
# from the kubernetes module's own source, as its Makefile does (static, so the image needs no libc).
pause_build() {
  local dir tag
  dir=$(cd "$root/hack/tools/k8s" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  tag=$(sed -n 's/^TAG ?= *//p' "$dir/build/pause/Makefile")
  command -v gcc >/dev/null || { echo "tools.sh: gcc is required for pause (hack/apt.sh installs it)" >&2; exit 1; }
  gcc -Os -Wall -Werror -static "-DVERSION=v$tag-soundmind" -o "$out.tmp" "$dir/build/pause/linux/pause.c"
  strip "$out.tmp"
}
if wanted pause; then build pause "$k8s" pause_build; fi

if wanted etcd; then
  etcd=$(module_version etcd go.etcd.io/etcd/server/v3)
  build etcd "$etcd" go_build_in etcd "-s -w" .
fi

if wanted kwok; then
  build kwok "$KWOK_VERSION" go_install "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi

helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
if wanted helm; then build helm "$HELM_VERSION" go_install "$helm_ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"; fi

if wanted registry; then
  registry_module=github.com/distribution/distribution/v3
  build registry "$REGISTRY_VERSION" go_install "-s -w -X $registry_module/version.version=$REGISTRY_VERSION" \
    "$registry_module/cmd/registry@$REGISTRY_VERSION"
fi

# cosign's and syft's dependency trees (every cloud's KMS client, Sigstore's services; every package
# format syft reads) make them the slowest builds here after Kubernetes: cold, with empty module and
# build caches, cosign took 11 and syft 9 CPU-minutes (15 and 11 min of wall time on two cores that
# another cold build was using; actionlint 1 min). make test builds cosign and syft beside its tests
# (`later`); the release workflow builds just helm, cosign and syft.
if wanted cosign; then
  build cosign "$COSIGN_VERSION" go_install "-s -w -X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION" \
    "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION"
fi
if wanted syft; then
  build syft "$SYFT_VERSION" go_install "-s -w -X main.version=$SYFT_VERSION" \
    "github.com/anchore/syft/cmd/syft@$SYFT_VERSION"
fi
if wanted kind; then
  build kind "$KIND_VERSION" go_install "-s -w" "sigs.k8s.io/kind@$KIND_VERSION"
fi
if wanted actionlint; then
  build actionlint "$ACTIONLINT_VERSION" go_install "-s -w -X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION" \
    "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
fi

keda_build() { # <cmd dir>
  if [ -n "$keda_prefetch" ]; then
    # Its failure is only a lost head start: the build fetches what is missing and reports its own errors.
    wait "$keda_prefetch" || echo "tools.sh: fetching KEDA's modules ahead failed: $(tail -3 "$keda_log")" >&2
    keda_prefetch=""
  fi
  (cd "$keda_dir" && go build -trimpath -ldflags "-s -w -X $keda_module/version.Version=$keda_version" -o "$out.tmp" "./$1")
}
if wanted keda-operator; then build keda-operator "$keda_version" keda_build cmd/operator; fi
if wanted keda-adapter; then build keda-adapter "$keda_version" keda_build cmd/adapter; fi

# Third-party CRDs for the integration tests, copied from their Go modules into <cache>/crds/
# <project>-<version>/: what tests/support/third_party_crds.py does on demand, from the same pins.
fetch_crds() {
  while read -r project module version subdir; do
    dest="$cache/crds/$project-$version"
    [ -d "$dest" ] && continue
    start=$SECONDS
    work=$(mktemp -d "$cache/crds/.$project-XXXXXX")
    # Run outside any module (in $work); on failure -json puts the reason in the JSON on stdout.
    if ! json=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$module@$version"); then
      rm -rf "$work"
      echo "tools.sh: go mod download $module@$version failed: $json" >&2
      exit 1
    fi
    dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
    mkdir "$work/crds"
    install -m 644 "$dir/$subdir"/*.yaml "$work/crds/"
    mv -T "$work/crds" "$dest"
    rm -rf "$work"
    echo "fetched $project $version CRDs in $((SECONDS - start))s" >&2
  done < <(grep -v '^[[:space:]]*\(#\|$\)' "$root/hack/third-party-crds.txt")
}
if wanted crds; then
  mkdir -p "$cache/crds"
  locked crds fetch_crds
fi

echo "$current"
