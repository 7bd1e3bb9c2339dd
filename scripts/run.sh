#!/usr/bin/env bash
# Builds the workspace and runs the whole LeadMaster stack in the foreground under the
# supervisor (Ctrl-C stops everything). Uses supervisor.toml; creates the git-ignored
# config/central-hub.env from its example (with a fresh JWT_SECRET) on first run, and
# installs Chromium for session-manager when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# session-manager drives a Chromium: the same idempotent step as scripts/test.sh installs one
# with apt when none is found (CHROMIUM_PATH, chromium, chromium-browser or google-chrome).
if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; then
    bash .ci/session-manager-deps.sh
fi
cargo build --release --workspace
if [ ! -f config/central-hub.env ]; then
    secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    sed "s/^JWT_SECRET=.*/JWT_SECRET=${secret}/" config/central-hub.env.example > config/central-hub.env
    chmod 600 config/central-hub.env
    echo "run.sh: created config/central-hub.env with a random JWT_SECRET"
fi
exec ./target/release/leadmaster-supervisord --config supervisor.toml
