#!/usr/bin/env bash
# Installs the Debian packages the project uses, once.
set -euo pipefail
pkgs=(espeak-ng sox prometheus)
# The local cluster's real node (tests/support/realnode.py): its container runtime, pod network,
# kube-proxy's nftables, the busybox image's program, and gcc with a static libc for the pause image.
pkgs+=(containerd runc containernetworking-plugins iproute2 nftables util-linux busybox-static gcc libc6-dev)
# make images (hack/images): debootstrap and the keys it checks bookworm with (not on Ubuntu by default), and
# a Docker engine to build with.
pkgs+=(debootstrap debian-archive-keyring docker.io)
# The local registry (tests/support/registry.py, make push): skopeo copies the image tarballs into it,
# htpasswd (apache2-utils) writes its bcrypt password file.
pkgs+=(skopeo apache2-utils)
# A machine with Docker CE (a GitHub runner, a kind user's) has its containerd.io and docker-ce, which
# conflict with Debian's containerd, runc and docker.io: installing those would remove that Docker.
# Where the program is there, whoever installed it, it is used as it is.
declare -A provides=([containerd]=containerd [runc]=runc [docker.io]=dockerd)
missing=()
for p in "${pkgs[@]}"; do
  program=${provides[$p]:-}
  if [ -n "$program" ] && PATH="$PATH:/usr/sbin:/sbin" command -v "$program" >/dev/null; then
    continue
  fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}" >&2
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
