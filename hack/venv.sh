#!/usr/bin/env bash
# Ensures the cached Python environment used by `make test` / `make demo` and prints its path.
# The environment lives outside the repository, keyed by the hash of what decides its contents,
# so a fresh clone reuses it; the project itself is (re)installed editable on every call (fast).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SOUNDMIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/soundmind}
# `|| true`: with pipefail, an unmatched requirements glob (no extra requirement files) would end the script.
key=$({ cat "$root/pyproject.toml" "$root/hack/venv.sh" "$root"/hack/requirements-*.txt \
  "$root/images/trainer/requirements.lock" 2>/dev/null || true; } | sha256sum | cut -c1-12)
venv="$cache/venv/py311-$key"
mkdir -p "$cache/venv"
exec 9>"$cache/venv/.lock"
flock 9  # concurrent callers (parallel make targets, two shells) build it once
if [ ! -x "$venv/.ready" ]; then
  echo "creating Python environment $venv (first run only)" >&2
  rm -rf "$venv"
  python3.11 -m venv "$venv" >&2 || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q -e "$root[test]" >&2
  # verl is pinned and installed without its dependency tree (Ray, vLLM, CUDA torch...): the tests
  # use its shipped config schema and dataset code; what those need is listed in the test extra.
  "$venv/bin/pip" install -q --no-deps "verl==0.9.1" >&2
  for req in "$root"/hack/requirements-*.txt; do
    [ -e "$req" ] || continue
    "$venv/bin/pip" install -q -r "$req" -c "$root/images/trainer/requirements.lock" >&2
  done
  printf '#!/bin/sh\n' >"$venv/.ready" && chmod +x "$venv/.ready"
fi
touch "$venv/.ready"  # last use, for pruning
# Environments of older dependency sets (several GB each, torch) go once unused for two hours.
for old in "$cache"/venv/py311-*; do
  [ "$old" = "$venv" ] && continue
  [ -n "$(find "$old/.ready" -mmin -120 2>/dev/null)" ] || rm -rf "$old"
done
# Point the editable install at this checkout (a CI clone lives in another folder).
where='import soundmind, soundmind_operator, os; print(*(os.path.dirname(os.path.dirname(m.__file__)) for m in (soundmind, soundmind_operator)))'
if [ "$(cd / && "$venv/bin/python" -c "$where" 2>/dev/null)" != "$root $root/operator" ]; then
  "$venv/bin/pip" install -q --no-deps -e "$root" >&2
fi
echo "$venv"
