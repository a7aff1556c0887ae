#!/usr/bin/env bash
# `make test`'s run, after its set-up: the integration tests and the unit tests at once, in two pytest
# processes. The integration tests mostly wait on the local cluster; the unit tests mostly compute
# (torch, verl, vLLM on tiny models), so together they take about as long as the longer of the two.
# The unit tests run at a lower CPU priority, so the cluster's components and the operator under test
# get the CPU first. The integration tests report as they go; the unit tests' report is printed whole
# once both have ended. Each report ends with its slowest tests (what to work on when make test
# grows past its 20-minute budget). Beside both, it builds hack/tools.sh's `later` tools (the registry,
# cosign, syft, KEDA: most of a cold run's compiling), which only the integration modules that run last
# need; they wait for it (tests/integration/conftest.py). Exits non-zero when any of the three failed.
# Usage: hack/test.sh <python of the project's environment> [pytest arguments for both...]
set -uo pipefail
python=${1:?usage: $0 <python> [pytest arguments...]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
unit_log=$(mktemp "${TMPDIR:-/tmp}/soundmind-unit-XXXXXX.log")
tools_log=$(mktemp "${TMPDIR:-/tmp}/soundmind-tools-XXXXXX.log")
trap 'rm -f "$unit_log" "$tools_log"' EXIT

# Warm, every tool is built and this ends at once. Its own nice: the tests come first.
nice -n 5 hack/tools.sh later >"$tools_log" 2>&1 &
tools=$!
nice -n 10 "$python" -m pytest tests/unit -p no:cacheprovider --durations=10 "$@" >"$unit_log" 2>&1 &
unit=$!
trap 'kill "$unit" "$tools" 2>/dev/null; rm -f "$unit_log" "$tools_log"' EXIT INT TERM

"$python" -m pytest tests/integration --durations=15 "$@"
integration_status=$?
wait "$unit"
unit_status=$?
wait "$tools"
tools_status=$?

echo
echo "==================== hack/tools.sh later (built beside the tests) ===================="
cat "$tools_log"
echo
echo "==================== unit tests (ran beside the integration tests) ===================="
cat "$unit_log"
echo
echo "make test: integration tests exit ${integration_status}, unit tests exit ${unit_status}, later tools exit ${tools_status}"
[ "$integration_status" -eq 0 ] && [ "$unit_status" -eq 0 ] && [ "$tools_status" -eq 0 ]
