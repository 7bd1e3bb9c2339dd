#!/usr/bin/env bash
# The test command: installs what the tests need (Chromium, MariaDB, promtool) when missing and
# runs every test of the workspace, every test binary even after one fails
# (--no-fail-fast), so the summary counts them all. Tests that need Chromium or MariaDB skip loudly on a
# machine without them, and fail when CI=true. Ends with one summary line over all test
# binaries ("tests: N passed, N failed").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; then
    bash .ci/session-manager-deps.sh
    bash .ci/central-hub-deps.sh
    bash .ci/metrics-deps.sh
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -oE '[0-9]+ failed;' "$log" | awk '{s += $1} END {print s + 0}')
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
