#!/usr/bin/env bash
# `make demo`: the whole system on the embedded local cluster, one step after another.
# Usage: hack/demo.sh <python of the project's environment>. Add a step: write a function and
# append it to `steps` below.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${1:?usage: $0 <python>}
export PATH="$(dirname "$python"):$PATH" # the project's `soundmind` command
# This checkout's packages in every step, whichever checkout the environment's editable install names.
export PYTHONPATH="$root:$root/operator${PYTHONPATH:+:$PYTHONPATH}"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
demo_dir="${SOUNDMIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/soundmind}/demo"

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

# -- The workload: data, reward, trainer launch ------------------------------------------------------
step_workload() {
  say "The workload: spoken ALR data, the SoundMind-RL reward, the verl GRPO launch"
  local work="$demo_dir/workload"
  rm -rf "$work" && mkdir -p "$work"
  # Logic problems the project generates (premises, conclusion, correct label), spoken by espeak-ng.
  soundmind data synth --out "$work/alr" --split train --limit 16 --seed 1
  soundmind data synth --out "$work/alr" --split dev --limit 8 --seed 2
  local wav
  wav=$(find "$work/alr/train" -name question.wav | sort | head -1)
  echo "  e.g. $wav: $(soxi -r "$wav") Hz, $(soxi -c "$wav") channel, $(soxi -D "$wav") s"
  soundmind data prepare --data-dir "$work/alr" --out "$work/alr/prepared/audio-text" --modality audio-text
  "$python" - "$work/alr/prepared/audio-text/train.parquet" <<'PY'
import sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
row = t.slice(0, 1).to_pylist()[0]
print(f"  {sys.argv[1]}: {t.num_rows} rows, columns {t.column_names}")
print(f"  ground truth {row['reward_model']['ground_truth']!r}; user turn: {row['prompt'][-1]['content'][:110]!r}...")
PY
  echo
  echo "The reward scores by the label, never by the reference reasoning:"
  "$python" - <<'PY'
from soundmind.reward import compute_score
good = "<think>Both premises hold, so the conclusion follows.</think>\nAnswer: entailed"
for text, truth in [(good, "entailed"), (good, "not-entailed"), ("It is entailed, I think.", "entailed")]:
    r = compute_score("soundmind/alr", text, truth, {"ref_answer_words": 9})
    print(f"  truth={truth:<13} score={r['score']:.2f} acc={r['acc']:.0f} format_ok={r['format_ok']!s:<5}  {text[-30:]!r}")
PY
  local dev="$root/../shared/data/alr/dev.jsonl"
  if [ -f "$dev" ]; then
    echo
    echo "Published ALR dev references whose reasoning ends against their own label:"
    soundmind reward check "$dev" | tail -3
  fi
  echo
  echo "The trainer's launch, rendered and validated against verl 0.9.1's own config (soundmind train --dry-run):"
  cat >"$work/training.yaml" <<YAML
dataset: {path: $work/alr/prepared/audio-text, modality: audio-text}
algorithm: {trainBatchSize: 8}
resources: {nodes: 2, gpusPerNode: 8}
YAML
  SOUNDMIND_TRAINING_NAME=alr-grpo-2n soundmind train --config "$work/training.yaml" --dry-run \
    --checkpoints-root "$work/checkpoints" | sed 's/^/  /'
}

# -- SoundMindTraining operator (issue 5) -----------------------------------------------------------
demo_ns=soundmind-demo
demo_training=alr-grpo-2n
operator_pid=""
metrics_port=""
operator_kubeconfig=""
operator_log="$demo_dir/operator.log"

stop_operator() {
  if [ -n "$operator_pid" ] && kill -0 "$operator_pid" 2>/dev/null; then
    kill "$operator_pid" && wait "$operator_pid" 2>/dev/null || true
    echo "(operator stopped)"
  fi
}

start_operator() { # as the chart's ServiceAccount ($operator_kubeconfig), logging to $operator_log
  local liveness
  read -r metrics_port liveness <<<"$("$python" -c 'import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')"
  (cd "$root" && KUBECONFIG="$operator_kubeconfig" exec "$python" -m soundmind_operator.main --all-namespaces \
    --resync-seconds 5 --metrics-port "$metrics_port" --liveness-port "$liveness" >>"$operator_log" 2>&1) &
  operator_pid=$!
  trap stop_operator EXIT
  for _ in $(seq 100); do
    "$python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$liveness/healthz', timeout=1)" 2>/dev/null && break
    kill -0 "$operator_pid" 2>/dev/null || { tail -20 "$operator_log"; return 1; }
    sleep 0.2
  done
  echo "soundmind-operator is running as system:serviceaccount:soundmind-system:soundmind-soundmind-operator, the chart's (log: $operator_log)"
}

wait_training() { # kubectl wait quietly (it logs routine watch restarts), loudly on failure
  local out
  if ! out=$(kubectl wait smt/"$demo_training" -n "$demo_ns" --timeout=60s "$@" 2>&1); then
    echo "$out" >&2
    return 1
  fi
}

conditions() {
  kubectl get smt "$demo_training" -n "$demo_ns" \
    -o jsonpath='{range .status.conditions[*]}{"  "}{.type}={.status}{"\t"}{.reason}{": "}{.message}{"\n"}{end}'
}

step_training() {
  say "SoundMindTraining: CRD, operator, a 2-node x 8-GPU training"
  local workdir="$demo_dir"
  mkdir -p "$workdir"
  : >"$operator_log"
  # The operator's chart, as a user installs it: CRDs (its soundmind-crds dependency), ServiceAccount
  # and RBAC, metrics Service, the Grafana dashboards' ConfigMaps. operator.replicas=0: kwok runs no
  # containers, so the operator runs below as a local process holding a token of the release's
  # ServiceAccount: it has exactly the permissions the chart grants.
  helm dependency build "$root/charts/soundmind-operator" >/dev/null
  local crd
  for crd in soundmindtrainings.soundmind.ai soundmindservings.soundmind.ai; do # applied by kubectl before? adopt
    if kubectl get crd "$crd" >/dev/null 2>&1; then
      kubectl label --overwrite crd "$crd" app.kubernetes.io/managed-by=Helm >/dev/null
      kubectl annotate --overwrite crd "$crd" meta.helm.sh/release-name=soundmind meta.helm.sh/release-namespace=soundmind-system >/dev/null
    fi
  done
  echo "helm upgrade --install soundmind charts/soundmind-operator -n soundmind-system --create-namespace --set operator.replicas=0"
  helm upgrade --install soundmind "$root/charts/soundmind-operator" -n soundmind-system --create-namespace \
    --set operator.replicas=0 --wait --timeout 120s >/dev/null
  helm list -n soundmind-system
  echo
  kubectl get deploy,sa,svc,configmap -n soundmind-system -l app.kubernetes.io/instance=soundmind
  echo
  (cd "$root" && "$python" - "$KUBECONFIG" "$workdir/operator.kubeconfig" <<'PY'
import sys
from pathlib import Path
from tests.support.kube import Kube
from tests.support.operator import service_account_kubeconfig
service_account_kubeconfig(Kube.connect(Path(sys.argv[1])), Path(sys.argv[2]), "soundmind-system", "soundmind-soundmind-operator")
PY
  )
  kubectl get crd soundmindtrainings.soundmind.ai -o custom-columns='CRD:.metadata.name,SHORT:.spec.names.shortNames[0],CATEGORY:.spec.names.categories[0]'
  operator_kubeconfig="$workdir/operator.kubeconfig"
  start_operator

  # A fresh demo namespace (an earlier demo's training is deleted by the running operator).
  kubectl delete smt --all -n "$demo_ns" --ignore-not-found --wait=true >/dev/null 2>&1 || true
  kubectl create namespace "$demo_ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl apply -f "$root/examples/local-volumes.yaml" >/dev/null
  kubectl wait pvc --all -n "$demo_ns" --for=jsonpath='{.status.phase}'=Bound --timeout=60s >/dev/null
  local began=$SECONDS
  kubectl apply -n "$demo_ns" -f "$root/examples/training-2-nodes.yaml"
  wait_training --for=jsonpath='{.status.phase}'=Running
  echo "Running $((SECONDS - began))s after kubectl apply."
  cat <<'TEXT'

What is real and what is simulated: the API server, the scheduler, the Job and garbage-collector
controllers, RBAC, the operator and every object below are real. The two nodes, their 16 GPUs and
the pods' containers are simulated by kwok: nothing trains; kwok reports the pods Running, and the
demo plays the trainer's part by patching its progress report and ending its pods.
TEXT
  echo
  kubectl get smt -n "$demo_ns"
  echo
  kubectl get job,pods -n "$demo_ns" -l app.kubernetes.io/instance="$demo_training" -o wide
  echo
  kubectl get svc -n "$demo_ns" -l app.kubernetes.io/instance="$demo_training"
  echo
  echo "Conditions:"
  conditions

  say "The trainer reports progress (status.progress; the operator never overwrites it)"
  kubectl patch smt "$demo_training" -n "$demo_ns" --subresource=status --type=merge -p "{\"status\":{\"progress\":{\"step\":120,\"totalSteps\":1620,\"epoch\":1,\"rewardMean\":2.41,\"valAccuracy\":0.67,\"updatedAt\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"},\"checkpoint\":{\"step\":100,\"path\":\"/checkpoints/$demo_training/global_step_100\"}}}" >/dev/null
  kubectl get smt -n "$demo_ns"

  sleep 3 # the group holds its GPUs for a moment (status.gpuSeconds counts whole seconds)
  say "A node fails: the driver pod exits 1; the operator restarts the group as attempt 2"
  local driver
  driver=$(kubectl get pods -n "$demo_ns" -l batch.kubernetes.io/job-name="$demo_training-a1",batch.kubernetes.io/job-completion-index=0 -o name)
  kubectl annotate -n "$demo_ns" "$driver" sim.soundmind.ai/exit-code=1 sim.soundmind.ai/exit-message="NCCL watchdog timeout" >/dev/null
  wait_training --for=jsonpath='{.status.attempt}'=2
  wait_training --for=jsonpath='{.status.phase}'=Running
  kubectl get smt "$demo_training" -n "$demo_ns" -o custom-columns='NAME:.metadata.name,PHASE:.status.phase,ATTEMPT:.status.attempt,JOB:.status.jobName,CHECKPOINT:.status.checkpoint.step,GPU-SECONDS:.status.gpuSeconds'
  kubectl get pods -n "$demo_ns" -l app.kubernetes.io/instance="$demo_training" -o wide

  sleep 3
  say "The driver finishes: it exports the model (status.model), then Succeeded"
  kubectl patch smt "$demo_training" -n "$demo_ns" --subresource=status --type=merge \
    -p "{\"status\":{\"model\":{\"path\":\"/checkpoints/$demo_training/export/global_step_100\",\"step\":100}}}" >/dev/null
  driver=$(kubectl get pods -n "$demo_ns" -l batch.kubernetes.io/job-name="$demo_training-a2",batch.kubernetes.io/job-completion-index=0 -o name)
  kubectl annotate -n "$demo_ns" "$driver" sim.soundmind.ai/exit-code=0 >/dev/null
  wait_training --for=jsonpath='{.status.phase}'=Succeeded
  kubectl get smt -n "$demo_ns"
  echo
  echo "Conditions:"
  conditions
  echo
  echo "Events (kubectl describe smt $demo_training -n $demo_ns):"
  local uid
  uid=$(kubectl get smt "$demo_training" -n "$demo_ns" -o jsonpath='{.metadata.uid}')
  kubectl get events -n "$demo_ns" --field-selector involvedObject.uid="$uid" \
    --sort-by=.eventTime -o custom-columns='TYPE:.type,REASON:.reason,MESSAGE:.message'
  echo
  echo "Operator metrics (http://127.0.0.1:$metrics_port/metrics):"
  "$python" -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$metrics_port/metrics').read().decode())" \
    | grep -E '^soundmind_(trainings|training_gpu_seconds|training_retries_total|operator_reconcile_total|training_pending_duration_seconds_(count|sum))' | sed 's/^/  /'
}

# -- SoundMindServing (issue 8) ---------------------------------------------------------------------
wait_serving() { # <name> <kubectl wait condition...>
  local name=$1 out; shift
  if ! out=$(kubectl wait sms/"$name" -n "$demo_ns" --timeout=90s "$@" 2>&1); then
    echo "$out" >&2
    kubectl get sms "$name" -n "$demo_ns" -o yaml >&2
    return 1
  fi
}

serving_conditions() {
  kubectl get sms "$1" -n "$demo_ns" \
    -o jsonpath='{range .status.conditions[*]}{"  "}{.type}={.status}{"\t"}{.reason}{": "}{.message}{"\n"}{end}'
}

step_serving() {
  say "SoundMindServing: Qwen2.5-Omni behind vLLM, autoscaled, from the serving chart"
  kubectl delete sms --all -n "$demo_ns" --ignore-not-found --wait=true >/dev/null 2>&1 || true
  helm uninstall serving -n "$demo_ns" >/dev/null 2>&1 || true
  local began=$SECONDS
  echo "helm install serving charts/soundmind-serving -n $demo_ns --set model=Qwen/Qwen2.5-Omni-7B"
  helm install serving "$root/charts/soundmind-serving" -n "$demo_ns" --set model=Qwen/Qwen2.5-Omni-7B >/dev/null
  wait_serving serving --for=jsonpath='{.status.phase}'=Available
  echo "Available $((SECONDS - began))s after helm install (kwok reports the vLLM pod Ready; nothing loads weights)."
  echo
  kubectl get sms -n "$demo_ns"
  echo
  kubectl get deploy,svc,pdb,hpa -n "$demo_ns" -l app.kubernetes.io/instance=serving,app.kubernetes.io/component=server
  echo
  echo "The vLLM command, checked against vLLM 0.24's own argument parser before the Deployment existed:"
  kubectl get deploy serving -n "$demo_ns" -o jsonpath='{.spec.template.spec.containers[0].command} {.spec.template.spec.containers[0].args}{"\n"}' | sed 's/^/  /'
  echo
  echo "Conditions (KEDA is not installed here, so an HPA on vLLM's queue length as an External metric):"
  serving_conditions serving

  say "Serving what the training exported (fromTraining)"
  kubectl apply -n "$demo_ns" -f - <<YAML
apiVersion: soundmind.ai/v1alpha1
kind: SoundMindServing
metadata: {name: alr-tuned}
spec:
  fromTraining: {name: $demo_training}
  servedModelName: alr-tuned
  autoscaling: {enabled: false}
YAML
  wait_serving alr-tuned --for=jsonpath='{.status.phase}'=Available
  kubectl get sms -n "$demo_ns"
  serving_conditions alr-tuned | grep ModelReady

  say "A misspelt vLLM flag: refused before any pod exists"
  kubectl apply -n "$demo_ns" -f - <<'YAML'
apiVersion: soundmind.ai/v1alpha1
kind: SoundMindServing
metadata: {name: typo}
spec:
  model: Qwen/Qwen2.5-Omni-7B
  vllm: {extraArgs: ["--max-modle-len=4096"]}
YAML
  wait_serving typo --for=jsonpath='{.status.phase}'=Failed
  serving_conditions typo | grep ConfigError
  echo "  pods of typo: $(kubectl get pods -n "$demo_ns" -l app.kubernetes.io/instance=typo -o name | wc -l)"
  kubectl delete sms typo -n "$demo_ns" >/dev/null

  say "kubectl scale through the scale subresource"
  kubectl scale sms alr-tuned -n "$demo_ns" --replicas 2
  wait_serving alr-tuned --for=jsonpath='{.status.readyReplicas}'=2
  kubectl get sms alr-tuned -n "$demo_ns"
  echo
  echo "Operator metrics for servings:"
  "$python" -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$metrics_port/metrics').read().decode())" \
    | grep -E '^soundmind_(servings|serving_replicas_(ready|desired))' | grep -v ' 0.0$' | sed 's/^/  /'
  stop_operator
  echo
  echo "Run the operator yourself:  KUBECONFIG=$operator_kubeconfig $python -m soundmind_operator.main --all-namespaces"
}

# -- Autoscaling under load (issue 12) --------------------------------------------------------------
step_autoscaling() {
  say "Autoscaling: KEDA, the HPA controller and Prometheus scale the example serving under load"
  cat <<'TEXT'
Simulated: the pods' containers (kwok) and the model (one vLLM stand-in per Ready pod, answering with
vLLM's API and metrics, 4 requests at a time, the rest queued). Real: KEDA's operator and metrics API
server, the HPA controller, Prometheus, the scheduler, the API server and the operator.
TEXT
  (cd "$root" && "$python" -m tests.support.autoscaling demo --kubeconfig "$KUBECONFIG")
}

# -- Evaluation (issue 21): soundmind eval against a served model, through its Service --------------
real_node=real-node            # the cluster's node that runs containers (tests/support/realnode.py)
eval_gpu=soundmind.ai/test-gpu # an extended resource advertised on it, as Kubernetes documents it
eval_serving=alr-eval

advertise_eval_gpu() { # <op: add|remove>
  local value=""
  [ "$1" = add ] && value=',"value":"1"'
  kubectl patch node "$real_node" --subresource=status --type=json \
    -p "[{\"op\":\"$1\",\"path\":\"/status/capacity/${eval_gpu/\//\~1}\"$value}]" >/dev/null
}

stop_evaluation() {
  kubectl delete sms "$eval_serving" -n "$demo_ns" --ignore-not-found --wait=true >/dev/null 2>&1 || true
  advertise_eval_gpu remove 2>/dev/null || true
  stop_operator
}

step_evaluation() {
  say "Evaluation: soundmind eval against the served model, through its Service"
  if ! kubectl get node "$real_node" >/dev/null 2>&1; then
    echo "This cluster has no real node (SOUNDMIND_REAL_NODE=false, or not root): no pod runs a process here,"
    echo "so nothing can answer. Start the cluster with its real node to see this step."
    return 0
  fi
  cat <<'TEXT'
Real: the pod runs on the real node (containerd, kubelet, its startup probe), and the request goes to
the Service's ClusterIP, through kube-proxy. Simulated: the model. The server is the vLLM stand-in's
image (vLLM's routes and answer format, no weights, no GPU); it answers each clip with a label fixed
by a hash of the audio, so accuracy is chance here. On GPUs the same command measures the model.
TEXT
  echo
  local work="$demo_dir/workload" tarball cluster_ip
  tarball=$("$python" -m hack.images standin | tail -1) # built by `make demo`'s setup; a no-op then
  "$root/hack/cluster.sh" load-images "$tarball"
  start_operator
  trap stop_evaluation EXIT
  advertise_eval_gpu add
  kubectl apply -n "$demo_ns" -f - <<YAML
apiVersion: soundmind.ai/v1alpha1
kind: SoundMindServing
metadata: {name: $eval_serving}
spec:
  model: Qwen/Qwen2.5-Omni-7B
  servedModelName: soundmind
  image: soundmind-standin:dev
  replicas: 1
  autoscaling: {enabled: false}
  resources:
    gpus: 1
    gpuResource: $eval_gpu
    cpu: 100m
    memory: 512Mi
    shmSize: 64Mi
    nodeSelector: {kubernetes.io/hostname: $real_node}
  startupTimeoutSeconds: 180
YAML
  local began=$SECONDS
  if ! kubectl wait sms/"$eval_serving" -n "$demo_ns" --for=jsonpath='{.status.phase}'=Available --timeout=200s >/dev/null; then
    kubectl describe sms "$eval_serving" -n "$demo_ns" >&2
    return 1
  fi
  echo "Available $((SECONDS - began))s after kubectl apply."
  kubectl get sms "$eval_serving" -n "$demo_ns"
  kubectl get pods,svc -n "$demo_ns" -l app.kubernetes.io/instance="$eval_serving" -o wide
  cluster_ip=$(kubectl get svc "$eval_serving" -n "$demo_ns" -o jsonpath='{.spec.clusterIP}')
  echo
  echo "soundmind eval --endpoint http://$cluster_ip:8000 --model soundmind --data $work/alr/prepared/audio-text/dev.parquet"
  soundmind eval --endpoint "http://$cluster_ip:8000" --model soundmind \
    --data "$work/alr/prepared/audio-text/dev.parquet" --report "$work/eval-report.json" --concurrency 4 | sed 's/^/  /'
  echo
  echo "The report ($work/eval-report.json):"
  "$python" - "$work/eval-report.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
latency = report["latency_s"]
print(f"  accuracy {report['accuracy']}   format_rate {report['format_rate']}   "
      f"latency_s p50 {latency['p50']}  p95 {latency['p95']}   ({report['requests']['answered']} of {report['requests']['rows']} answered)")
PY
  stop_evaluation
  trap - EXIT
}

step_explore() {
  say "Explore, then tear down"
  cat <<TEXT
  eval "\$(make -s cluster-up | tail -2)"            # this shell talks to the demo's cluster
  kubectl get smt,sms -A                             # trainings and servings
  kubectl describe smt $demo_training -n $demo_ns    # conditions and events
  helm list -A                                       # the soundmind (operator chart) and serving releases
  kubectl get configmap -n soundmind-system -l grafana_dashboard=1   # the Grafana dashboards
  KUBECONFIG=$operator_kubeconfig $python -m soundmind_operator.main --all-namespaces   # the operator again
  helm uninstall serving -n $demo_ns; helm uninstall soundmind -n soundmind-system
  make cluster-down                                  # stop the local cluster
TEXT
}

steps=(step_cluster step_workload step_training step_serving step_autoscaling step_evaluation step_explore)

for step in "${steps[@]}"; do
  "$step"
done
