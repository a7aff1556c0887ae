#!/usr/bin/env bash
# `make demo`: the whole system on the embedded local cluster, one step after another.
# Usage: hack/demo.sh <python of the project's environment>. Add a step: write a function and
# append it to `steps` below.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${1:?usage: $0 <python>}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step_cluster() {
  say "Local Kubernetes control plane"
  eval "$("$root/hack/cluster.sh" up | tail -2)"
  export KUBECONFIG PATH
  cat <<'TEXT'
etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real programs, built from
the Go module proxy: scheduling, controllers, RBAC and the API are genuine. The nodes and their
GPUs are simulated by kwok: no containers run; kwok marks pods Running and Ready, and completes or
fails them as tests ask (see tests/support/sim.py).
TEXT
  echo
  kubectl version 2>/dev/null | sed 's/^/  /'
  echo
  kubectl get nodes -o custom-columns='NAME:.metadata.name,READY:.status.conditions[?(@.type=="Ready")].status,GPUS:.status.capacity.nvidia\.com/gpu,CPU:.status.capacity.cpu,MEMORY:.status.capacity.memory,GPU:.metadata.labels.nvidia\.com/gpu\.product'
  echo
  echo "Use it from your shell:  eval \"\$(make -s cluster-up | tail -2)\"   (stop: make cluster-down)"
}

steps=(step_cluster)

for step in "${steps[@]}"; do
  "$step"
done
