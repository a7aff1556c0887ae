#!/usr/bin/env bash
# The one-command GPU check of a host with one NVIDIA GPU: the smoke run of examples/smoke outside
# Kubernetes. It makes the tiny random Qwen2.5-Omni and a small spoken data set with the setup Job's
# own commands, then runs `soundmind train` on examples/smoke/training.yaml as a training pod does
# (Ray head, verl's GRPO driver with vLLM rollouts and FSDP, 2 steps, then verl's model merger), and
# checks the export. Nothing is downloaded.
#
#   hack/gpu-smoke.sh [--image IMAGE] [--gpu N] [--work DIR] [--dry-run]   # in the trainer image (Docker)
#   hack/gpu-smoke.sh --local [--work DIR] [--dry-run]                       # with the locked wheels
#
# Needs: Docker with the NVIDIA container toolkit and the trainer image (`make images-all`, then
# `docker load -i soundmind-trainer-dev.tar` on the GPU host), or, with --local, a Python environment
# of images/trainer/requirements.lock plus soundmind ($PYTHON, default python3) and espeak-ng; and an
# NVIDIA driver of 580 or newer (the CUDA 13 wheels). --dry-run prints the commands and runs nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
image=soundmind-trainer:dev
gpu=0
work=${TMPDIR:-/tmp}/soundmind-gpu-smoke
local_run=false
dry_run=false
# The CUDA 13 wheels' driver floor, from the trainer's preflight (its one place in code).
MIN_DRIVER=$(sed -n 's/^MIN_DRIVER_MAJOR = \([0-9]*\).*/\1/p' "$root/soundmind/train/preflight.py")

die() { echo "gpu-smoke: $*" >&2; exit 1; }
while (($#)); do
  case $1 in
    --image) image=${2:?--image needs a value}; shift 2 ;;
    --gpu) gpu=${2:?--gpu needs a value}; shift 2 ;;
    --work) work=${2:?--work needs a value}; shift 2 ;;
    --local) local_run=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ $gpu =~ ^[0-9]+$ ]] || die "--gpu must be a GPU index, got '$gpu'"
work=$(realpath -m "$work") # Docker mounts need an absolute path

training=$root/examples/smoke/training.yaml
name=soundmind-smoke # examples/smoke/training.yaml's metadata.name: names the checkpoint directory
# The volumes a training pod mounts (soundmind.train.contract), as directories under $work.
if $local_run; then
  models=$work/models data=$work/data checkpoints=$work/checkpoints config=$work/training.yaml
  python=$(command -v "${PYTHON:-python3}") || die "no ${PYTHON:-python3}"
  PATH=$(dirname "$python"):$PATH # its environment's `ray`, which soundmind train starts
else
  models=/models data=/data checkpoints=/checkpoints config=/etc/soundmind/training.yaml
fi

# One step: `soundmind ARGS...` in the trainer image (or the local environment), printed first.
run() {
  local argv
  if $local_run; then
    argv=("$python" -m soundmind "$@")
  else
    argv=(docker run --rm --gpus "device=$gpu" --shm-size 8g --user "$(id -u):$(id -g)"
      --env HOME=/tmp --env USER=soundmind --env "SOUNDMIND_TRAINING_NAME=$name"
      --volume "$work/models:/models" --volume "$work/data:/data" --volume "$work/checkpoints:/checkpoints"
      --volume "$training:/etc/soundmind/training.yaml:ro" --entrypoint soundmind "$image" "$@")
  fi
  printf '+'; printf ' %q' "${argv[@]}"; printf '\n'
  $dry_run || SOUNDMIND_TRAINING_NAME=$name "${argv[@]}"
}

if ! $dry_run; then
  command -v nvidia-smi >/dev/null || die "no nvidia-smi: this host has no NVIDIA driver installed"
  gpu_line=$(nvidia-smi --id="$gpu" --query-gpu=name,driver_version,memory.total --format=csv,noheader) ||
    die "nvidia-smi cannot read GPU $gpu"
  driver=$(cut -d, -f2 <<<"$gpu_line" | tr -d ' ')
  ((${driver%%.*} >= MIN_DRIVER)) || die "NVIDIA driver $driver on GPU $gpu; the CUDA 13 wheels need $MIN_DRIVER or newer"
  echo "gpu-smoke: GPU $gpu: $gpu_line"
  if $local_run; then
    "$python" -c 'import soundmind, verl, vllm' || die "$python lacks soundmind, verl or vLLM"
    command -v espeak-ng >/dev/null || die "no espeak-ng (apt-get install espeak-ng): soundmind data synth speaks with it"
  else
    docker image inspect "$image" >/dev/null 2>&1 || die "Docker has no image $image (docker load -i soundmind-trainer-dev.tar)"
  fi
  [[ ! -e $work ]] || die "$work exists: remove it, or give another --work"
  mkdir -p "$work/models" "$work/data" "$work/checkpoints"
fi
if $local_run; then # the spec's paths are the pod's mounts: point them at $work
  $dry_run && echo "gpu-smoke: would write $config:"
  "$python" - "$training" "$($dry_run && echo - || echo "$config")" "$models" "$data" <<'EOF'
import sys, yaml
source, target, models, data = sys.argv[1:]
manifest = yaml.safe_load(open(source))
spec = manifest["spec"]
spec["model"] = spec["model"].replace("/models/", models + "/", 1)
spec["dataset"]["path"] = spec["dataset"]["path"].replace("/data/", data + "/", 1)
text = yaml.safe_dump(manifest, sort_keys=False)
if target == "-":
    print("".join(f"    {line}\n" for line in text.splitlines()), end="")
else:
    open(target, "w").write(text)
EOF
fi
started=$SECONDS

# examples/smoke/setup.yaml's steps, in its order (tests/unit/test_smoke_example.py holds them equal).
run model tiny-omni --out "$models/soundmind-smoke/tiny-omni"
run data synth --out "$data/soundmind-smoke/alr" --split train --limit 8 --seed 0
run data synth --out "$data/soundmind-smoke/alr" --split dev --limit 4 --seed 1
run data prepare --data-dir "$data/soundmind-smoke/alr" --out "$data/soundmind-smoke/prepared" --modality audio-text
# The training pod's command, on examples/smoke/training.yaml; no Kubernetes, so no status patches.
run train --config "$config" --checkpoints-root "$checkpoints" --no-status

exported=$work/checkpoints/$name/export/global_step_2
if $dry_run; then
  echo "gpu-smoke: would check that $exported/config.json exists"
else
  [[ -f $exported/config.json ]] || die "the training ended but left no export at $exported"
  echo "gpu-smoke: OK: 2 GRPO steps of the tiny Qwen2.5-Omni and its export ($exported) on GPU $gpu in $((SECONDS - started))s"
fi
