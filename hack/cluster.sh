#!/usr/bin/env bash
# The local control plane for a shell: `hack/cluster.sh up|down|status|load-images <tar>...`.
#
# up: starts (or reuses, when the one recorded in the state file still answers) etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kwok with simulated GPU nodes and a real
# node (containerd, kubelet, kube-proxy; needs root), then prints, as its last two lines,
#   export KUBECONFIG=<admin kubeconfig>
#   export PATH=<cached binaries>:$PATH
# so `eval "$(make -s cluster-up | tail -2)"` gives this shell kubectl and helm of the cluster's
# version. The cluster runs detached until `down`. Node count / GPUs per node: SOUNDMIND_SIM_NODES,
# SOUNDMIND_SIM_GPUS_PER_NODE (used when a new cluster starts). SOUNDMIND_SIM_GANG_SCHEDULING=false starts
# it without Kubernetes' gang scheduling (no PodGroup API), as most clusters are today;
# SOUNDMIND_REAL_NODE=false without the real node (simulated nodes only, no root needed).
#
# load-images: imports image archives (`docker save` output, e.g. from `make images`) into the real
# node's containerd; pods then run them by tag with imagePullPolicy Never or IfNotPresent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SOUNDMIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/soundmind}
state="$cache/cluster/state.json"
command=${1:-up}

case "$command" in
  up | down | status | load-images) ;;
  *) echo "usage: $0 up|down|status|load-images <image archive>..." >&2; exit 2 ;;
esac

py="$("$root/hack/venv.sh")/bin/python"
mkdir -p "$cache/cluster"
exec 9>"$cache/cluster/.lock"
flock 9 # one `up` at a time, so two shells share one cluster

launcher() {
  (cd "$root" && "$py" -m tests.support.localcluster "$@" --state "$state")
}

case "$command" in
  up)
    bin_dir=$("$root/hack/tools.sh" | tail -1)
    flags=()
    case "${SOUNDMIND_SIM_GANG_SCHEDULING:-true}" in false | 0) flags+=(--no-gang-scheduling) ;; esac
    case "${SOUNDMIND_REAL_NODE:-true}" in false | 0) flags+=(--no-real-node) ;; esac
    kubeconfig=$(launcher up --bin-dir "$bin_dir" --nodes "${SOUNDMIND_SIM_NODES:-2}" \
      --gpus-per-node "${SOUNDMIND_SIM_GPUS_PER_NODE:-8}" "${flags[@]}" | tail -1)
    echo "export KUBECONFIG=$kubeconfig"
    echo "export PATH=$bin_dir:\$PATH"
    ;;
  down | status) launcher "$command" ;;
  load-images)
    shift
    [ $# -gt 0 ] || { echo "usage: $0 load-images <image archive>..." >&2; exit 2; }
    archives=()
    for archive in "$@"; do archives+=("$(realpath "$archive")"); done # the launcher runs in $root
    launcher load-images "${archives[@]}"
    ;;
esac
