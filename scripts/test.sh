#!/usr/bin/env bash
# The test command: installs what the tests need (Chromium, MariaDB) when missing and
# runs every test of the workspace. Tests that need Chromium or MariaDB skip loudly on a
# machine without them, and fail when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; then
    bash .ci/session-manager-deps.sh
    bash .ci/central-hub-deps.sh
fi
exec cargo test --workspace "$@"
